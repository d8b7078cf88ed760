"""Training that survives SIGKILL (mid-epoch and mid-checkpoint-write), Ctrl-C, and a diverging loss."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_image_folder, run_interrupted_and_resumed

import ms_vit
from ms_vit import data
from ms_vit.config import make_train_config
from ms_vit.train import fine_tune

# Random crops and flips (the default recipe's), which a mid-epoch resume must replay exactly; the model is large
# enough (1.2 M parameters, a 15 MB training state) for a checkpoint write to take measurable time.
ARGS = ["--model", "vit_tiny_test", "--image_size", "32", "--embed_dim", "192", "--num_layers", "4", "--num_heads", "3",
        "--mlp_dim", "384", "--batch_size", "4", "--epochs", "6", "--optimizer", "adamw", "--lr", "1e-3",
        "--crop_scale", "0.08", "1", "--crop_ratio", "0.75", "1.333", "--hflip", "0.5", "--num_workers", "1",
        "--log_every", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("crash") / "data", n_train=8, n_val=2, size=40)


def start(dataset, out, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *ARGS, "--data_dir", dataset,
                             "--output_dir", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def final_weights(out, epoch=6):
    params = ms_vit.read_checkpoint(os.path.join(out, "checkpoints", f"epoch_{epoch:03d}.ckpt")).params
    return {k: v for k, v in params.items() if not k.startswith(("moment", "adam", "beta", "learning_rate"))}


def assert_same(a, b):
    assert set(a) == set(b)
    diff = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    print(f"max abs weight difference from the uninterrupted run: {diff:.3g}")
    assert diff <= 1e-6


def every_checkpoint_loads(out):
    found = []
    for folder in (out, os.path.join(out, "checkpoints")):
        for name in os.listdir(folder):
            if name.endswith(".ckpt") and not name.startswith("."):
                ms_vit.read_checkpoint(os.path.join(folder, name))  # raises if half-written
                found.append(name)
    return found


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("crash") / "reference"
    code, log = finish(start(dataset, out))
    assert code == 0, log[-2000:]
    return final_weights(out)


def kill_when(proc, condition, timeout=240):
    """SIGKILL ``proc`` as soon as ``condition()`` holds (polled every millisecond); True if it was caught alive."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    return False


def test_sigkill_during_a_checkpoint_write_then_resume(dataset, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(dataset, out)
    folder = out / "checkpoints"

    def writing():
        return folder.is_dir() and any(n.endswith(".partial.ckpt") for n in os.listdir(folder))

    assert kill_when(proc, writing), "the run ended before a checkpoint write could be interrupted"
    proc.stdout.close()
    every_checkpoint_loads(str(out))
    complete = sorted(n for n in os.listdir(folder) if n.startswith("epoch_") and n.endswith(".ckpt"))
    code, log = finish(start(dataset, out, "--resume"))
    assert code == 0, log[-2000:]
    if complete:  # the newest whole checkpoint, never the torn one
        assert f"resumed from {folder / complete[-1]} " in log, log[-2000:]
    else:
        assert "nothing to resume" in log, log[-2000:]
    assert not [n for n in os.listdir(folder) if n.endswith(".partial.ckpt")]  # the torn write was cleaned up
    assert_same(final_weights(out), reference)


def test_sigkill_in_the_middle_of_an_epoch_then_resume(dataset, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(dataset, out)
    seen = []

    def mid_epoch_three():
        line = proc.stdout.readline()
        seen.append(line)
        return line.startswith("epoch 3/6 step 3/")

    assert kill_when(proc, mid_epoch_three), "".join(seen)[-2000:]
    proc.stdout.close()
    assert sorted(every_checkpoint_loads(str(out))) == ["best.ckpt", "epoch_001.ckpt", "epoch_002.ckpt"]
    code, log = finish(start(dataset, out, "--resume"))
    assert code == 0, log[-2000:]
    assert "resumed from" in log and "epoch_002.ckpt (epoch 2" in log
    assert_same(final_weights(out), reference)


def test_ctrl_c_saves_and_resume_continues_mid_epoch(dataset, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(dataset, out)
    for line in proc.stdout:
        if line.startswith("epoch 4/6 step 2/"):
            proc.send_signal(signal.SIGINT)
            break
    code, log = finish(proc)
    assert code == 130, log[-2000:]
    assert "Traceback" not in log and "interrupted at epoch 4 step" in log and "--resume" in log
    assert os.path.exists(out / "checkpoints" / "interrupted.ckpt")
    code, log = finish(start(dataset, out, "--resume"))
    assert code == 0, log[-2000:]
    assert "interrupted.ckpt (epoch 3" in log
    assert not os.path.exists(out / "checkpoints" / "interrupted.ckpt")  # superseded by epoch 4's checkpoint
    assert_same(final_weights(out), reference)


def test_each_sample_keeps_its_augmentation_whatever_came_before(tmp_path):
    """A sample's crop and flip depend on (seed, epoch, sample index) only: not on the worker count, nor on the
    samples a resume leaves out."""
    root = make_image_folder(tmp_path / "data", n_train=4, n_val=1, size=40)
    train, index = os.path.join(root, "train"), {"blue": 0, "green": 1, "red": 2}
    cfg = make_train_config({"image_size": 32, "batch_size": 4, "crop_scale": [0.08, 1.0], "hflip": 0.5})

    def images(epoch=1, skip=0, workers=1):
        batches = data.train_dataset(train, index, dataclasses.replace(cfg, num_workers=workers), epoch, skip=skip)
        return np.concatenate([b[0] for b in batches.create_tuple_iterator(output_numpy=True)])

    full = images()
    assert full.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(images(workers=2), full)
    np.testing.assert_array_equal(images(skip=4), full[4:])
    np.testing.assert_array_equal(images(skip=8, workers=2), full[8:])
    first = data.file_list(train, index)[0]
    crops = [data.TrainAugment(32, (0.08, 1.0), (0.75, 1.333), 0.5, key=(0, epoch))(first, 0) for epoch in (1, 2)]
    assert not np.array_equal(*crops)  # random: another epoch, another crop


def test_ctrl_c_mid_epoch_with_random_crops_and_flips_resumes_exactly(tmp_path):
    """In-process: Ctrl-C (a real SIGINT) in the middle of epoch 2, then --resume, with two pipeline workers."""
    values = {"model": "vit_tiny_test", "image_size": 32, "batch_size": 4, "epochs": 2, "optimizer": "adamw",
              "lr": 1e-3, "crop_scale": [0.08, 1.0], "hflip": 0.5, "num_workers": 2, "log_every": 1,
              "data_dir": make_image_folder(tmp_path / "data", n_train=8, n_val=2, size=40)}
    saved = run_interrupted_and_resumed(values, tmp_path)
    assert saved["epoch"] == 1 and 0 < saved["step_in_epoch"] < 6  # mid-epoch: the resume leaves samples out
    assert_same(final_weights(tmp_path / "cut", 2), final_weights(tmp_path / "full", 2))


def test_diverging_loss_stops_with_the_step_and_keeps_checkpoints(tmp_path):
    make_image_folder(tmp_path / "data", n_train=4, n_val=1, size=32)
    cfg = make_train_config({"model": "vit_tiny_test", "image_size": 32, "data_dir": str(tmp_path / "data"),
                             "output_dir": str(tmp_path / "out"), "batch_size": 4, "epochs": 2, "optimizer": "sgd",
                             "lr": 1e12, "num_workers": 1})
    diverged = r"training diverged at step \d+ \(epoch \d\): loss .*gradients not finite"
    with pytest.raises(ms_vit.MsVitError, match=diverged) as caught:
        fine_tune(cfg, log=lambda *a: None)
    kept = every_checkpoint_loads(str(tmp_path / "out"))
    named = re.search(r"the last good checkpoint is (\S+):", str(caught.value))
    if named:  # the message names a checkpoint that is there and whole
        assert os.path.basename(named.group(1)) in kept
    else:
        assert "no checkpoint yet" in str(caught.value) and not kept


def test_a_resumed_run_that_diverges_names_the_checkpoint_it_resumed_from(tmp_path):
    import mindspore as ms

    make_image_folder(tmp_path / "data", n_train=4, n_val=1, size=32)
    out = tmp_path / "out"
    cfg = make_train_config({"model": "vit_tiny_test", "image_size": 32, "data_dir": str(tmp_path / "data"),
                             "output_dir": str(out), "batch_size": 4, "epochs": 2, "optimizer": "sgd", "lr": 1e-3,
                             "num_workers": 1, "keep_checkpoints": 2})
    fine_tune(cfg, log=lambda *a: None)
    os.remove(out / "checkpoints" / "epoch_002.ckpt")
    os.remove(out / "train_state.json")
    first = str(out / "checkpoints" / "epoch_001.ckpt")
    ckpt = ms_vit.read_checkpoint(first)
    ckpt.params["dense.weight"] = ckpt.params["dense.weight"] * np.float32(1e38)  # epoch 2's first step overflows
    ms_vit.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in ckpt.params.items()], first, meta=ckpt.meta)
    with pytest.raises(ms_vit.MsVitError, match=r"the last good checkpoint is \S+epoch_001\.ckpt"):
        fine_tune(dataclasses.replace(cfg, resume=True), log=lambda *a: None)


def test_no_pickle_in_loading_code():
    """MindSpore checkpoints, safetensors and NumPy with allow_pickle=False: nothing in ms_vit unpickles."""
    for folder, _, files in os.walk(os.path.join(ROOT, "ms_vit")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for bad in ("import pickle", "allow_pickle=True", "torch.load", "pickle.load"):
                    assert bad not in text, f"{name}: {bad}"
