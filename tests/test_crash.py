"""Training that survives SIGKILL (mid-epoch and mid-checkpoint-write), Ctrl-C, and a diverging loss."""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_image_folder, max_difference, tiny_config

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.data import folder as data
from ms_vit.train.run import fine_tune

# Random crops and flips (the default recipe's), which a mid-epoch resume must replay exactly, read by two pipeline
# workers; the model is large enough (1.2 M parameters, a 15 MB training state) for a checkpoint write to take
# measurable time. 4 epochs of 6 steps.
ARGS = ["--model", "vit_tiny_test", "--image_size", "32", "--embed_dim", "192", "--num_layers", "4", "--num_heads", "3",
        "--mlp_dim", "384", "--batch_size", "4", "--epochs", "4", "--optimizer", "adamw", "--lr", "1e-3",
        "--crop_scale", "0.08", "1", "--crop_ratio", "0.75", "1.333", "--hflip", "0.5", "--num_workers", "2",
        "--log_every", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("crash") / "data", n_train=8, n_val=2, size=40)


def start(dataset, out, *extra, stdout=subprocess.PIPE):
    """scripts/train.py in a process of its own (what a SIGKILL needs), its output merged into one pipe."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *ARGS, "--data_dir", dataset,
                             "--output_dir", str(out), *extra], stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env=env)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def training_state(out, name="epoch_004.ckpt"):
    """Everything a checkpoint holds: weights, optimizer moments, step counters."""
    return ms_vit.read_checkpoint(os.path.join(out, "checkpoints", name)).params


def every_checkpoint_loads(out):
    found = []
    for folder in (out, os.path.join(out, "checkpoints")):
        for name in os.listdir(folder):
            if name.endswith(".ckpt") and not name.startswith("."):
                ms_vit.read_checkpoint(os.path.join(folder, name))  # raises if half-written
                found.append(name)
    return found


def partial_files(folder):
    return [n for n in os.listdir(folder) if n.endswith(".partial.ckpt")]


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


def test_sigkill_mid_write_sigkill_mid_epoch_and_ctrl_c_each_resume_to_the_uninterrupted_weights(dataset, tmp_path):
    """One output folder through every way a run can stop, each followed by --resume in a new process:
    1. SIGKILL while a checkpoint is being written: the resume starts from the newest whole checkpoint (or from
       scratch) and clears the torn file;
    2. SIGKILL in the middle of epoch 3: the resume starts from epoch 2's checkpoint;
    3. Ctrl-C (SIGINT) in the middle of epoch 4: exit code 130, one message and no traceback, interrupted.ckpt saved
       mid-epoch; the resume continues from it and replays the rest of the epoch.
    The last resume ends with the uninterrupted run's weights, optimizer state and step counters: every resume on the
    way was exact, since each one's checkpoints are what the next one starts from. The uninterrupted run runs beside
    them, in a process of its own too (the machine's other core)."""
    with open(tmp_path / "reference.log", "w") as reference_log:
        uninterrupted = start(dataset, tmp_path / "reference", stdout=reference_log)
    try:
        out = tmp_path / "run"
        folder = out / "checkpoints"

        # 1. SIGKILL during a checkpoint write
        proc = start(dataset, out)
        assert kill_when(proc, lambda: folder.is_dir() and bool(partial_files(folder))), \
            "the run ended before a checkpoint write could be interrupted"
        proc.stdout.close()
        every_checkpoint_loads(str(out))
        complete = sorted(n for n in os.listdir(folder) if n.startswith("epoch_") and n.endswith(".ckpt"))

        # 2. resume, then SIGKILL in the middle of epoch 3
        proc = start(dataset, out, "--resume")
        seen = []

        def mid_epoch_three():
            seen.append(proc.stdout.readline())
            return seen[-1].startswith("epoch 3/4 step 3/")

        assert kill_when(proc, mid_epoch_three), "".join(seen)[-2000:]
        proc.stdout.close()
        log = "".join(seen)
        if complete:  # the newest whole checkpoint, never the torn one
            assert f"resumed from {folder / complete[-1]} " in log, log[-2000:]
        else:
            assert "nothing to resume" in log, log[-2000:]
        assert not partial_files(folder)  # the torn write was cleaned up
        assert sorted(every_checkpoint_loads(str(out))) == ["best.ckpt", "epoch_001.ckpt", "epoch_002.ckpt"]

        # 3. resume, then Ctrl-C in the middle of epoch 4
        proc = start(dataset, out, "--resume")
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch 4/4 step 2/"):
                proc.send_signal(signal.SIGINT)
                break
        code, rest = finish(proc)
        log = "".join(seen) + rest
        assert code == 130, log[-2000:]
        assert "resumed from" in log and "epoch_002.ckpt (epoch 2" in log, log[-2000:]
        assert "Traceback" not in log and "interrupted at epoch 4 step" in log and "--resume" in log
        saved = ms_vit.read_checkpoint(str(folder / "interrupted.ckpt")).meta
        assert saved["epoch"] == 3 and 0 < saved["step_in_epoch"] < 6  # mid-epoch: the resume leaves samples out

        # 4. resume to the end
        code, log = finish(start(dataset, out, "--resume"))
        assert code == 0, log[-2000:]
        assert "interrupted.ckpt (epoch 3" in log
        assert not os.path.exists(folder / "interrupted.ckpt")  # superseded by epoch 4's checkpoint
        assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-2000:]
    finally:  # a failed check leaves no run behind
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()
    difference = max_difference(training_state(out), training_state(tmp_path / "reference"))
    print(f"max abs difference from the uninterrupted run's training state: {difference:.3g}")
    assert difference <= 1e-6


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


def test_diverging_loss_stops_with_the_step_and_keeps_checkpoints(tmp_path):
    make_image_folder(tmp_path / "data", n_train=4, n_val=1, size=32)
    cfg = tiny_config(tmp_path / "data", tmp_path / "out", epochs=2, optimizer="sgd", lr=1e12, clip_grad_norm=0.0)
    diverged = r"training diverged at step \d+ \(epoch \d\): loss .*gradients not finite"
    with pytest.raises(ms_vit.MsVitError, match=diverged) as caught:
        fine_tune(cfg, log=lambda *a: None)
    kept = every_checkpoint_loads(str(tmp_path / "out"))
    named = re.search(r"the last good checkpoint is (\S+):", str(caught.value))
    if named:  # the message names a checkpoint that is there and whole
        assert os.path.basename(named.group(1)) in kept
    else:
        assert "no checkpoint yet" in str(caught.value) and not kept


def test_a_resumed_run_that_diverges_names_the_checkpoint_it_resumed_from(tiny_run, tmp_path):
    import mindspore as ms

    out = tmp_path / "out"  # the shared run as it stood after epoch 2 (less its compile cache), weights that overflow
    shutil.copytree(tiny_run.output_dir, out, ignore=shutil.ignore_patterns("compile_cache"))
    os.remove(out / "checkpoints" / "epoch_003.ckpt")
    os.remove(out / "train_state.json")
    last = str(out / "checkpoints" / "epoch_002.ckpt")
    ckpt = ms_vit.read_checkpoint(last)
    ckpt.params["dense.weight"] = ckpt.params["dense.weight"] * np.float32(1e38)  # epoch 3's first step overflows
    ms_vit.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in ckpt.params.items()], last, meta=ckpt.meta)
    with pytest.raises(ms_vit.MsVitError, match=r"the last good checkpoint is \S+epoch_002\.ckpt"):
        fine_tune(tiny_config(tiny_run.data_dir, out, resume=True), log=lambda *a: None)


def test_no_pickle_in_loading_code():
    """MindSpore checkpoints, safetensors and NumPy with allow_pickle=False: nothing in ms_vit unpickles."""
    for folder, _, files in os.walk(os.path.join(ROOT, "ms_vit")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for bad in ("import pickle", "allow_pickle=True", "torch.load", "pickle.load"):
                    assert bad not in text, f"{name}: {bad}"
