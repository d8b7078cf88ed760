"""MindSpore's compile cache: one folder per combination of everything that shapes the graphs, reused by a resumed or
repeated run with the same results, never by a run whose model, config, MindSpore or ms_vit differ."""

import os
import subprocess
import sys

import numpy as np

from conftest import ROOT, TINY, make_image_folder
from ms_vit.train.compile_cache import cache_key, source_digest
from ms_vit.config import make_train_config, model_config

TRAIN = make_train_config({"model": TINY, "epochs": 2}).graph_values()
MODEL = model_config(TINY).to_dict()
SHAPES = {"classes": 3, "steps_per_epoch": 4, "amp": "O0", "device": "CPU", "processes": 1}


def key(train=None, model=None, shapes=None, version="2.10.0", sources="abc"):
    return cache_key({**TRAIN, **(train or {})}, {**MODEL, **(model or {})}, {**SHAPES, **(shapes or {})}, version,
                     sources)


def test_every_part_that_shapes_a_graph_changes_the_key():
    base = key()
    changed = [key(model={"num_layers": 3}), key(model={"layer_norm_eps": 1e-6}), key(train={"lr": 1e-3}),
               key(train={"epochs": 3}), key(train={"accum_steps": 2}), key(train={"finetune_mode": "lora"}),
               key(shapes={"steps_per_epoch": 5}), key(shapes={"classes": 4}), key(shapes={"amp": "O2"}),
               key(version="2.9.0"), key(sources="abd")]
    assert base not in changed and len(set(changed)) == len(changed)


def test_where_a_run_writes_does_not_change_the_key():
    def graph(values):
        return make_train_config({"model": TINY, "epochs": 2, **values}).graph_values()

    where = {"output_dir": "elsewhere", "resume": True, "log_every": 1, "data_dir": "/data/b", "num_workers": 3,
             "tensorboard": True, "keep_checkpoints": 5}
    assert cache_key(graph(where), MODEL, SHAPES, "2.10.0", "abc") == key()
    assert cache_key(graph({"lr": 1e-3}), MODEL, SHAPES, "2.10.0", "abc") != key()


def test_an_edited_source_file_changes_the_digest(tmp_path, monkeypatch):
    import ms_vit.train.compile_cache as cc

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "data").mkdir()
    (package / "a.py").write_text("x = 1\n")
    (package / "data" / "b.py").write_text("y = 1\n")
    monkeypatch.setattr(cc, "__file__", str(package / "train" / "compile_cache.py"))
    first = source_digest()
    (package / "a.py").write_text("x = 2\n")
    second = source_digest()
    (package / "data" / "b.py").write_text("y = 2\n")  # a module of another subpackage counts too
    assert len({first, second, source_digest()}) == 3


# MindSpore's own warning, on stderr, for each graph it loads from the compile cache instead of compiling it (2.10:
# compile_cache_manager.cc, GetCachedFuncGraph); a graph it compiles gets "Execute all the compilation actions".
MINDSPORE_LOADED = "Use the compilation cache and execute the backend actions only"


def _run(data, out, *extra):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--model", TINY, "--data_dir",
                           str(data), "--output_dir", str(out), "--epochs", "1", "--batch_size", "4", "--image_size",
                           "32", "--log_every", "1", *extra], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _train(data, out, *extra):
    return _run(data, out, *extra).stdout


def _files(folder):
    """{path: (size, modification time in ns)} of every file under ``folder``."""
    return {os.path.join(where, name): (os.stat(os.path.join(where, name)).st_size,
                                        os.stat(os.path.join(where, name)).st_mtime_ns)
            for where, _, names in os.walk(folder) for name in names}


def _losses(log):
    return [line.split("loss ")[1].split()[0] for line in log.splitlines() if " loss " in line and "step" in line]


def _weights(path):
    import mindspore as ms

    return {name: p.asnumpy() for name, p in ms.load_checkpoint(str(path)).items() if hasattr(p, "asnumpy")}


def test_a_repeated_run_reuses_its_graphs_with_the_same_results_and_a_changed_model_does_not(tmp_path):
    make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    cold_run = _run(tmp_path / "data", out)
    cold = cold_run.stdout
    cold_weights = _weights(out / "best.ckpt")
    assert "compile cache:" in cold and "(new;" in cold
    folders = os.listdir(out / "compile_cache")
    cache = out / "compile_cache" / folders[0]
    graphs = [p for p in _files(cache) if os.path.basename(p).startswith("compile_cache_") and p.endswith(".mindir")]
    assert len(folders) == 1 and graphs and MINDSPORE_LOADED not in cold_run.stderr
    written = _files(cache)
    warm_run = _run(tmp_path / "data", out)
    warm = warm_run.stdout
    assert "reusing the graphs an earlier run compiled" in warm
    # MindSpore itself, not only ms_vit's line: it says it loaded each graph the first run wrote, and it wrote none
    # anew (a graph compiled again would rewrite its file).
    assert warm_run.stderr.count(MINDSPORE_LOADED) == len(graphs), warm_run.stderr[-3000:]
    assert _files(cache) == written
    assert _losses(warm) == _losses(cold) and _losses(cold)
    warm_weights = _weights(out / "best.ckpt")
    assert all(np.array_equal(cold_weights[name], warm_weights[name]) for name in cold_weights)
    other_run = _run(tmp_path / "data", out, "--drop_path_rate", "0.1")
    other = other_run.stdout
    assert "(new;" in other and len(os.listdir(out / "compile_cache")) == 2
    assert MINDSPORE_LOADED not in other_run.stderr  # another model: compiled, not taken from the first cache
    off = _train(tmp_path / "data", tmp_path / "off", "--compile_cache", "false")
    assert "compile cache" not in off and not (tmp_path / "off" / "compile_cache").exists()
    assert np.isfinite([float(v) for v in _losses(other)]).all()


def test_a_finished_run_leaves_the_cache_off_for_what_the_process_compiles_next(tmp_path):
    from ms_vit.train.compile_cache import ENV_ENABLE
    from ms_vit.train.run import fine_tune

    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)
    fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 1, "num_workers": 1,
                                 "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run")}),
              log=lambda *a: None)
    assert (tmp_path / "run" / "compile_cache").is_dir() and ENV_ENABLE not in os.environ


def test_without_an_entry_script_the_cache_stays_off_and_the_run_trains(tmp_path, monkeypatch):
    from ms_vit.train.compile_cache import ENV_ENABLE
    from ms_vit.train.run import fine_tune

    monkeypatch.setattr(sys, "argv", ["-c"])  # python -c: MindSpore's cache would fail opening "-c"
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)
    lines = []
    result = fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 1,
                                          "num_workers": 1, "data_dir": str(tmp_path / "data"),
                                          "output_dir": str(tmp_path / "run")}), log=lines.append)
    assert any(line.startswith("compile cache: off (MindSpore's cache reads the entry script") for line in lines)
    assert not (tmp_path / "run" / "compile_cache").exists() and ENV_ENABLE not in os.environ
    assert os.path.isfile(result.paths["best.ckpt"])
