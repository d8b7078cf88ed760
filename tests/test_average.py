"""Checkpoint averaging: ms_vit.checkpoint.average and scripts/average.py on the shared tiny run's checkpoints."""

import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of, model_weights, read_metrics
from test_scripts import script

import ms_vit
from ms_vit.checkpoint.average import average_checkpoints, write_average
from ms_vit.cli import run


def epochs(tiny_run, tmp_path):
    """Copies of the tiny run's output folder (tmp_path/out) and its two kept epoch checkpoints."""
    out = tmp_path / "out"
    shutil.copytree(tiny_run.output_dir, out, ignore=shutil.ignore_patterns("compile_cache"))
    return out, str(out / "checkpoints" / "epoch_002.ckpt"), str(out / "checkpoints" / "epoch_003.ckpt")


def rewrite(path, target, params=None, **meta):
    """``path`` saved again as ``target`` with its entries replaced by ``params`` and its metadata updated."""
    ckpt = ms_vit.read_checkpoint(str(path))
    values = params if params is not None else ckpt.params
    ms_vit.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in values.items()], str(target),
                           meta={**ckpt.meta, **meta})
    return str(target)


def test_averaging_copies_of_one_checkpoint_changes_nothing(tiny_run, tmp_path):
    _, _, last = epochs(tiny_run, tmp_path)
    copy = shutil.copy(last, tmp_path / "copy.ckpt")
    out = write_average([last, copy, last], tmp_path / "avg.ckpt")
    averaged, original = ms_vit.read_checkpoint(out), model_weights(last)
    assert sorted(averaged.params) == sorted(original)  # the weights only: no optimizer state, step or loss scale
    for name, value in original.items():
        assert averaged.params[name].dtype == value.dtype
        np.testing.assert_array_equal(averaged.params[name], value)
    assert averaged.meta["class_names"] == ["blue", "green", "red"]
    assert averaged.meta["weights"] == "averaged" and len(averaged.meta["averaged_from"]) == 3


def test_averaging_two_checkpoints_gives_their_mean(tiny_run, tmp_path, images):
    _, first, last = epochs(tiny_run, tmp_path)
    out = write_average([last, first], tmp_path / "avg.ckpt")
    a, b = model_weights(first), model_weights(last)
    averaged = ms_vit.read_checkpoint(out)
    for name in a:
        want = ((a[name].astype(np.float64) + b[name]) / 2).astype(np.float32)
        np.testing.assert_array_equal(averaged.params[name], want)
    assert not np.array_equal(a["dense.weight"], b["dense.weight"])  # two different points: the test means something
    assert averaged.meta["epoch"] == 3  # the newest file's metadata
    net = ms_vit.from_pretrained(out)
    assert net.class_names == ["blue", "green", "red"]
    assert logits_of(net, images(2)).shape == (2, 3)


def test_different_architectures_are_one_line(tiny_run, tmp_path):
    _, _, last = epochs(tiny_run, tmp_path)
    ms.set_seed(0)
    other = ms_vit.create_model(TINY, num_classes=3, num_layers=1)
    meta = {**ms_vit.read_checkpoint(last).meta, "model": other.config.to_dict()}
    other_path = ms_vit.save_checkpoint(other, str(tmp_path / "other.ckpt"), meta=meta)
    with pytest.raises(ms_vit.CheckpointError, match="different architectures") as err:
        average_checkpoints([last, other_path])
    message = str(err.value)
    assert "\n" not in message and last in message and other_path in message and "num_layers" in message

    # without metadata: the parameter shapes decide
    bare = {name: value for name, value in model_weights(last).items()}
    bare["dense.weight"] = np.zeros((5, bare["dense.weight"].shape[1]), np.float32)
    bare["dense.bias"] = np.zeros(5, np.float32)
    a = tmp_path / "a.ckpt"
    b = tmp_path / "b.ckpt"
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in model_weights(last).items()], str(a))
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in bare.items()], str(b))
    with pytest.raises(ms_vit.CheckpointError, match="dense.* has shape") as err:
        average_checkpoints([a, b])
    assert "\n" not in str(err.value)


def test_different_class_lists_are_one_line(tiny_run, tmp_path):
    _, first, last = epochs(tiny_run, tmp_path)
    other = rewrite(first, tmp_path / "other.ckpt", class_names=["blue", "green", "yellow"])
    with pytest.raises(ms_vit.CheckpointError, match="different class lists") as err:
        average_checkpoints([last, other])
    assert "\n" not in str(err.value) and "'red' vs 'yellow'" in str(err.value) and other in str(err.value)


def test_ema_weights_are_averaged_on_request(tiny_run, tmp_path):
    _, first, last = epochs(tiny_run, tmp_path)
    paths = []
    for k, path in enumerate((first, last)):
        ckpt = ms_vit.read_checkpoint(path)
        shadows = {f"ema.{name}": value + 1.0 for name, value in model_weights(path).items()}
        paths.append(rewrite(path, tmp_path / f"ema{k}.ckpt", {**ckpt.params, **shadows,
                                                                  "ema.updates": np.float32(3)}))
    trained, _ = average_checkpoints(paths)
    ema, meta = average_checkpoints(paths, weights="ema")
    assert meta["averaged_weights"] == "ema" and set(ema) == set(trained)
    np.testing.assert_allclose(ema["dense.weight"], trained["dense.weight"] + 1.0, atol=1e-6)
    with pytest.raises(ms_vit.ConfigError, match="holds no EMA weights"):
        average_checkpoints([first, last], weights="ema")


def test_lora_adapters_are_merged_before_averaging():
    from ms_vit.checkpoint.average import _merge_lora

    rng = np.random.default_rng(0)
    w, a, b = (rng.standard_normal(s).astype(np.float32) for s in ((6, 4), (2, 4), (6, 2)))
    merged = _merge_lora({"l.weight": w, "l.lora_a": a, "l.lora_b": b, "l.bias": np.zeros(6, np.float32)},
                         {"train_config": {"lora_alpha": 4.0}}, "x.ckpt")
    assert set(merged) == {"l.weight", "l.bias"}
    np.testing.assert_allclose(merged["l.weight"], w + 2.0 * (b @ a), rtol=1e-6)


def test_fewer_than_two_files_is_one_line(tiny_run, tmp_path):
    _, _, last = epochs(tiny_run, tmp_path)
    with pytest.raises(ms_vit.ConfigError, match="at least 2 checkpoints"):
        average_checkpoints([last])


def test_the_script_averages_the_last_and_the_best_epochs(tiny_run, tmp_path, capsys):
    out, first, last = epochs(tiny_run, tmp_path)
    assert run(script("average"), ["--run_dir", str(out), "--last", "2"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoints/epoch_002.ckpt, checkpoints/epoch_003.ckpt" in printed
    assert f"wrote {out / 'averaged.ckpt'}" in printed
    averaged = ms_vit.read_checkpoint(str(out / "averaged.ckpt"))
    assert averaged.meta["averaged_from"] == [first, last]

    # --best: the epochs of best top_1 in metrics.csv (rewritten: 1 and 2 beat 3; epoch 1's file a copy of 2's)
    kept = shutil.copy(first, out / "checkpoints" / "epoch_001.ckpt")
    rows = read_metrics(out)
    text = (out / "metrics.csv").read_text().splitlines()
    header = text[0].split(",")
    for i, row in enumerate(rows, 1):
        cells = text[i].split(",")
        cells[header.index("top_1")] = {"1": "0.8", "2": "0.9", "3": "0.7"}[row["epoch"]]
        text[i] = ",".join(cells)
    (out / "metrics.csv").write_text("\n".join(text) + "\n")
    from ms_vit.checkpoint.average import select_checkpoints

    assert select_checkpoints(str(out), best=2) == [str(kept), first]
    assert select_checkpoints(str(out), last=2) == [first, last]
    assert run(script("average"), ["--run_dir", str(out), "--best", "2", "--output", str(tmp_path / "b.ckpt")]) == 0

    # evaluates like best.ckpt
    report = tmp_path / "report.json"
    assert run(script("eval"), ["--ckpt", str(tmp_path / "b.ckpt"), "--data_dir",
                                os.path.join(tiny_run.data_dir, "val"), "--json", str(report)]) == 0
    assert "top-1" in capsys.readouterr().out


def test_the_script_refuses_more_epochs_than_the_run_kept(tiny_run, tmp_path, capsys):
    out, _, _ = epochs(tiny_run, tmp_path)
    assert run(script("average"), ["--run_dir", str(out), "--last", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--last 3" in err and "holds 2 epoch checkpoints" in err
    assert run(script("average"), ["--run_dir", str(out), "--best", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not (out / "averaged.ckpt").exists()
