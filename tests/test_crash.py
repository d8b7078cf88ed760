"""Training that survives SIGKILL (mid-epoch and mid-checkpoint-write), Ctrl-C, and a diverging loss."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_image_folder

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.train import fine_tune

# Deterministic augmentation (full-image crops, no flip) so that even a mid-epoch resume replays exactly; the model
# is large enough (1.2 M parameters, a 15 MB training state) for a checkpoint write to take measurable time.
ARGS = ["--model", "vit_tiny_test", "--image_size", "32", "--embed_dim", "192", "--num_layers", "4", "--num_heads", "3",
        "--mlp_dim", "384", "--batch_size", "4", "--epochs", "6", "--optimizer", "adamw", "--lr", "1e-3",
        "--crop_scale", "1", "1", "--crop_ratio", "1", "1", "--hflip", "0", "--num_workers", "1", "--log_every", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("crash") / "data", n_train=8, n_val=2, size=32)


def start(dataset, out, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *ARGS, "--data_dir", dataset,
                             "--output_dir", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def final_weights(out):
    params = ms_vit.read_checkpoint(os.path.join(out, "checkpoints", "epoch_006.ckpt")).params
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
    code, log = finish(start(dataset, out, "--resume"))
    assert code == 0, log[-2000:]
    assert "resumed from" in log or "nothing to resume" in log
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


def test_diverging_loss_stops_with_the_step_and_keeps_checkpoints(tmp_path):
    make_image_folder(tmp_path / "data", n_train=4, n_val=1, size=32)
    cfg = make_train_config({"model": "vit_tiny_test", "image_size": 32, "data_dir": str(tmp_path / "data"),
                             "output_dir": str(tmp_path / "out"), "batch_size": 4, "epochs": 2, "optimizer": "sgd",
                             "lr": 1e12, "num_workers": 1})
    with pytest.raises(ms_vit.MsVitError, match=r"training diverged at step \d+ \(epoch \d\): loss .*gradients not finite"):
        fine_tune(cfg, log=lambda *a: None)
    every_checkpoint_loads(str(tmp_path / "out"))


def test_no_pickle_in_loading_code():
    """MindSpore checkpoints, safetensors and NumPy with allow_pickle=False: nothing in ms_vit unpickles."""
    for folder, _, files in os.walk(os.path.join(ROOT, "ms_vit")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for bad in ("import pickle", "allow_pickle=True", "torch.load", "pickle.load"):
                    assert bad not in text, f"{name}: {bad}"
