"""The fine-tuning engine on a tiny model and tiny generated folders."""

import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY_RUN, make_image_folder, max_difference, model_weights, read_metrics, train_tiny

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.config.document import parse_config


def run(tmp_path, name="out", **overrides):
    """TINY_RUN on tmp_path/data into tmp_path/NAME."""
    return train_tiny(tmp_path / "data", tmp_path / name, **overrides)


def test_loss_falls_and_accuracy_rises(tiny_run):
    out = tiny_run.output_dir
    rows = read_metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["top_1"]) > 1 / 3 + 0.2
    # best.ckpt is the epoch with the highest val top-1 (the first such epoch on a tie)
    best_epoch = max(rows, key=lambda r: (float(r["top_1"]), -int(r["epoch"])))
    assert tiny_run.result.best_top1 == float(best_epoch["top_1"])
    assert ms_vit.read_checkpoint(str(out / "best.ckpt")).meta["epoch"] == int(best_epoch["epoch"])
    for name in ("best.ckpt", "curves.png", "config.yaml", "classes.txt", "train_state.json"):
        assert os.path.getsize(out / name) > 0
    best = ms_vit.from_pretrained(str(out / "best.ckpt"))
    assert best.class_names == ["blue", "green", "red"] and best.config.num_classes == 3
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch_002.ckpt", "epoch_003.ckpt"]  # the last 2 kept


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_run, tmp_path):
    # The shared run stopped after epoch 2: its output folder as it stood then (epoch 3's files absent). Its compile
    # cache stays behind: in the process that compiled the same graphs, loading them takes longer than compiling.
    cut = tmp_path / "cut"
    shutil.copytree(tiny_run.output_dir, cut, ignore=shutil.ignore_patterns("compile_cache"))
    os.remove(cut / "checkpoints" / "epoch_003.ckpt")
    with open(cut / "train_state.json", "w") as handle:
        json.dump({"checkpoint": "checkpoints/epoch_002.ckpt", "epoch": 2}, handle)
    result = train_tiny(tiny_run.data_dir, cut, resume=True)
    full, resumed = (ms_vit.read_checkpoint(str(out / "checkpoints" / "epoch_003.ckpt")).params
                     for out in (tiny_run.output_dir, cut))
    assert max_difference(full, resumed) <= 1e-6  # weights, optimizer moments, step counters
    assert result.last["epoch"] == 3
    assert [r["epoch"] for r in read_metrics(cut)] == ["1", "2", "3"]


def test_val_with_a_subset_of_classes_keeps_the_train_indices(tmp_path):
    from ms_vit.data import folder as data

    make_image_folder(tmp_path / "data", classes=("blue", "green", "red"), val_classes=("green", "red"), n_val=2)
    classes = data.train_classes(str(tmp_path / "data" / "train"))
    index = data.class_indexing(str(tmp_path / "data" / "val"), classes)
    assert index == {"green": 1, "red": 2}
    batches = data.eval_dataset(str(tmp_path / "data" / "val"), index, 32, 1.0, [0] * 3, [1] * 3, 8)
    labels = np.concatenate([b["label"] for b in batches.create_dict_iterator(output_numpy=True)])
    assert sorted(labels.tolist()) == [1, 1, 2, 2]


def test_val_class_absent_from_train_is_an_error(tmp_path):
    make_image_folder(tmp_path / "data", classes=("blue", "green"), val_classes=("green", "white"))
    with pytest.raises(ms_vit.ConfigError, match="not among the model's 2 classes: white"):
        run(tmp_path)


def test_yaml_then_command_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 0.01\nbatch_size: 8\ncrop_scale: [0.5, 1.0]\n")
    cfg = parse_config(["--config", str(recipe), "--batch_size", "4", "--crop_ratio", "0.9", "1.1", "--resume"])
    assert (cfg.lr, cfg.batch_size, cfg.crop_scale, cfg.crop_ratio, cfg.resume) == (0.01, 4, [0.5, 1.0], [0.9, 1.1], True)
    with pytest.raises(SystemExit):
        parse_config(["--config", str(recipe), "--help"])
    out = capsys.readouterr().out
    assert "--label_smoothing" in out and "(default: 0.01)" in out and "layer-wise learning-rate decay" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--lrr", "1"], "unknown option 'lrr'; did you mean lr?"),
    (["--batch_size", "-4"], "batch_size must be at least 1"),
    (["--lr", "-0.1"], "lr must be positive"),
    (["--epochs", "ten"], "config key epochs needs a int, got 'ten'"),
])
def test_bad_options(argv, fragment):
    with pytest.raises(ms_vit.ConfigError, match=fragment.replace("?", r"\?")):
        parse_config(argv)


def test_unknown_yaml_key_names_the_key_and_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 0.01\nwarmup_epoch: 1\n")
    with pytest.raises(ms_vit.ConfigError, match=r"unknown key in .*r.yaml 'warmup_epoch'; did you mean warmup_epochs"):
        parse_config(["--config", str(recipe)])


def test_the_shipped_recipes_parse():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    tutorial = parse_config(["--config", os.path.join(root, "vit_b_16_finetune.yaml")])
    assert (tutorial.model, tutorial.lr, tutorial.batch_size, tutorial.epochs, tutorial.label_smoothing) == \
        ("vit_b_16", 5e-5, 16, 10, 0.1)
    assert tutorial.pretrained.endswith("vit_b_16_224.ckpt") and tutorial.dataset_url.endswith(".zip")
    assert parse_config(["--config", os.path.join(root, "demo.yaml")]).demo_data


def test_batch_larger_than_the_data_set(tmp_path):
    make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    with pytest.raises(ms_vit.ConfigError, match="batch_size 16 is larger than the 6 training images"):
        run(tmp_path, batch_size=16)


def test_run_finetune_with_a_python_that_lacks_mindspore_names_it_and_the_install_command(tmp_path):
    import subprocess
    import sys

    python = tmp_path / "python"  # an interpreter without site-packages: MindSpore cannot be imported
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    python.chmod(0o755)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["bash", os.path.join(root, "run_finetune.sh")], env={**os.environ, "PYTHON": str(python)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {python} cannot import mindspore")
    assert "pip install -r requirements.txt" in proc.stderr


def test_accumulated_micro_batches_give_the_full_batch_update(tiny_run, tmp_path):
    """The shared run again in 4 micro-batches of 1 image per optimizer step (gradient clipping on in both)."""
    accum = train_tiny(tiny_run.data_dir, tmp_path / "accum", accum_steps=4)
    out = tiny_run.output_dir
    saved = ms_vit.read_checkpoint(str(tmp_path / "accum" / "checkpoints" / "epoch_003.ckpt")).params
    assert not any(k.startswith("grad_accum") for k in saved)  # buffers are never saved
    assert max_difference(model_weights(out / "checkpoints" / "epoch_003.ckpt"),
                          model_weights(tmp_path / "accum" / "checkpoints" / "epoch_003.ckpt")) <= 1e-5
    rows_full, rows_accum = read_metrics(out), read_metrics(tmp_path / "accum")
    assert len(rows_full) == len(rows_accum) == 3
    for x, y in zip(rows_full, rows_accum):
        assert x["step"] == y["step"]  # optimizer steps, not micro-batches
        assert abs(float(x["train_loss"]) - float(y["train_loss"])) <= 1e-5
        assert abs(float(x["top_1"]) - float(y["top_1"])) <= 1e-6
    assert tiny_run.result.last["lr"] == pytest.approx(accum.last["lr"])


def test_automatic_micro_batches_reach_the_pipeline(tiny_run, tmp_path, monkeypatch):
    """accum_steps 0 (auto) resolving to 2 trains exactly as an explicit 2: the pipeline yields micro-batches, so an
    epoch keeps all its optimizer steps (the pipeline once kept whole batches: half the steps, the LR cut short)."""
    from ms_vit.config import ViTConfig
    from ms_vit.config.model import PRESETS
    from ms_vit.models import complexity

    per_image = complexity.training_activation_bytes(ViTConfig(**PRESETS[TINY_RUN["model"]]))
    monkeypatch.setattr(complexity, "CPU_MICRO_BATCH_BYTES", 2 * per_image)  # batch 4 -> 2 micro-batches of 2
    lines = []
    train_tiny(tiny_run.data_dir, tmp_path / "auto", log=lines.append, epochs=1)
    assert any("(2 micro-batches of 2 per process)" in line for line in lines), lines
    train_tiny(tiny_run.data_dir, tmp_path / "explicit", accum_steps=2, epochs=1)
    auto, explicit = read_metrics(tmp_path / "auto"), read_metrics(tmp_path / "explicit")
    assert [r["step"] for r in auto] == [r["step"] for r in explicit] == ["9"]
    assert max_difference(model_weights(tmp_path / "auto" / "checkpoints" / "epoch_001.ckpt"),
                          model_weights(tmp_path / "explicit" / "checkpoints" / "epoch_001.ckpt")) <= 1e-6


def test_accum_steps_must_divide_the_batch(tmp_path):
    make_image_folder(tmp_path / "data", n_train=4, n_val=1)
    with pytest.raises(ms_vit.ConfigError, match="divisible by accum_steps 3"):
        run(tmp_path, accum_steps=3)


def test_ctrl_c_waits_for_the_end_of_the_optimizer_step():
    from types import SimpleNamespace

    from ms_vit.train.callbacks import Progress, RunState
    from ms_vit.train.interrupt import Interruptible

    state = RunState(1, 3, 8, np.ones(3), accum_steps=4)
    state.interrupted = True
    stops = []
    context = SimpleNamespace(request_stop=lambda: stops.append(state.step_in_epoch),
                              original_args=lambda: SimpleNamespace(net_outputs=(ms.Tensor(1.0), ms.Tensor(False), 1)))
    callbacks = [Progress(state, every=100, log=lambda *a: None), Interruptible(state).callback()]  # as fit orders them
    for _ in range(5):
        for callback in callbacks:
            callback.on_train_step_end(context)
    assert stops == [1]  # after micro-batch 4, not 1-3 (an unfinished update)


def test_auto_accumulation_sizes_micro_batches_to_the_model_on_cpu():
    from ms_vit.models.complexity import auto_accum_steps, training_activation_bytes
    from ms_vit.config import PRESETS, ViTConfig

    base = ViTConfig(**PRESETS["vit_b_16"])
    # the fewest micro-batches whose activations fit the budget: one fewer (a divisor) would not fit
    from ms_vit.models.complexity import CPU_MICRO_BATCH_BYTES
    for cfg, batch in ((base, 16), (base, 6), (ViTConfig(**PRESETS["vit_s_16"]), 32), (ViTConfig(**PRESETS["vit_b_32"]), 64)):
        steps = auto_accum_steps(cfg, batch, "CPU")
        assert batch % steps == 0
        assert batch // steps * training_activation_bytes(cfg) <= CPU_MICRO_BATCH_BYTES or batch // steps == 1
        fewer = [k for k in range(1, steps) if batch % k == 0]
        assert all(batch // k * training_activation_bytes(cfg) > CPU_MICRO_BATCH_BYTES for k in fewer)
    assert auto_accum_steps(base, 16, "CPU") == 8  # micro-batches of 2
    assert auto_accum_steps(base, 16, "CPU", "bf16") == 4  # the fused bf16 kernels keep less: micro-batches of 4
    assert auto_accum_steps(base, 16, "GPU") == auto_accum_steps(base, 16, "Ascend") == 1
    assert auto_accum_steps(ViTConfig(**PRESETS["vit_l_16"]), 16, "CPU") == 16  # over budget even alone: 1 image
    assert auto_accum_steps(ViTConfig(**PRESETS["vit_tiny_test"]), 16, "CPU") == 1
    assert auto_accum_steps(base, 6, "CPU") == 3  # a divisor of the batch


def test_batching_splits_the_batch_over_processes_and_micro_batches():
    from ms_vit.models.complexity import Batching, batching
    from ms_vit.config import PRESETS, ViTConfig

    def cfg(**values):
        return make_train_config({"batch_size": 16, **values})

    assert batching(cfg(), 2) == Batching(8, 1, 8, None)  # accum_steps 0 without a model: whole batches
    # 15 images a process: one whole optimizer step, even without drop_remainder, when accumulating
    assert batching(cfg(accum_steps=4, drop_remainder=False), 2, images=30) == Batching(8, 4, 2, 1)
    assert batching(cfg(drop_remainder=False), 2, images=30).steps_per_epoch == 2  # a smaller last step
    assert batching(cfg(drop_remainder=True), 2, images=30).steps_per_epoch == 1
    auto = batching(cfg(), model=ViTConfig(**PRESETS["vit_b_16"]), device="CPU")
    assert auto == Batching(16, 8, 2, None)  # complexity.auto_accum_steps
    assert batching(cfg(accum_steps=2), model=ViTConfig(**PRESETS["vit_b_16"]), device="CPU").accum_steps == 2
    with pytest.raises(ms_vit.ConfigError, match=r"batch_size 16 per process \(8\) must be divisible by accum_steps 3"):
        batching(cfg(accum_steps=3), 2)
    with pytest.raises(ms_vit.ConfigError, match="batch_size 16 is larger than the 14 training images in x/train "
                                                 "with drop_remainder"):
        batching(cfg(accum_steps=2), 2, images=14, where="x/train")
