"""--tensorboard: the run's scalars as TensorBoard event files, readable back; one clear line without tensorboardX."""

import glob
import struct

import pytest
from conftest import TINY, make_image_folder

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.train.run import fine_tune


def read_scalars(folder) -> dict:
    """{tag: [(step, value)]} from every event file under ``folder``: TFRecord framing (length, its masked CRC-32C,
    the Event proto, its masked CRC-32C), every CRC checked and every byte of the file consumed."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    scalars = {}
    for path in sorted(glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True)):
        with open(path, "rb") as handle:
            blob = handle.read()
        offset = 0
        while offset < len(blob):
            header = blob[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", blob[offset + 8:offset + 12])
            data = blob[offset + 12:offset + 12 + length]
            (data_crc,) = struct.unpack("<I", blob[offset + 12 + length:offset + 16 + length])
            assert header_crc == masked_crc32c(header) and data_crc == masked_crc32c(data), f"{path}: bad record"
            event = Event.FromString(data)
            offset += 16 + length
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        assert offset == len(blob), f"{path}: a truncated record"
    return scalars


# metrics.csv column -> TensorBoard tag, one value per epoch
EPOCH_TAGS = {"train_loss": "train/epoch_loss", "val_loss": "val/loss", "top_1": "val/top_1", "top_5": "val/top_5",
              "ema_val_loss": "ema/val_loss", "ema_top_1": "ema/top_1", "ema_top_5": "ema/top_5"}


def test_tensorboard_events_hold_the_runs_losses_lrs_metrics_and_ema(tmp_path):
    """Every scalar against what it should be: the per-step loss against the progress lines, the per-step learning
    rate against the warm-up + cosine schedule written out here, and each per-epoch value against metrics.csv."""
    import csv

    import numpy as np

    pytest.importorskip("tensorboardX")
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)
    out = tmp_path / "run"
    lines = []
    fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 2, "lr": 1e-3,
                                 "min_lr": 1e-5, "warmup_epochs": 1, "log_every": 1,
                                 "data_dir": str(tmp_path / "data"), "output_dir": str(out), "tensorboard": True,
                                 "ema_decay": 0.9, "num_workers": 1}), log=lines.append)
    scalars = read_scalars(out / "tensorboard")
    for tag in ("train/loss", "train/lr", "train/img_s"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4, 5, 6]  # 3 steps per epoch, 2 epochs
    # Learning rate: warm-up over epoch 1 (lr * s / 4 at steps 1..3), then cosine from lr to min_lr over 3 steps.
    lr, low = 1e-3, 1e-5
    want = [lr * s / 4 for s in (1, 2, 3)] + [low + 0.5 * (lr - low) * (1 + np.cos(np.pi * k / 2)) for k in (0, 1, 2)]
    np.testing.assert_allclose([v for _, v in scalars["train/lr"]], want, rtol=1e-6)
    # Loss: the progress line of each step ("... loss 2.3026 lr ..."), printed to 4 decimals.
    printed = [float(l.split(" loss ")[1].split()[0]) for l in lines if l.startswith("epoch ") and " step " in l]
    assert len(printed) == 6
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], printed, atol=5.1e-5, rtol=0)
    assert all(np.isfinite(v) and v > 0 for _, v in scalars["train/img_s"])
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for column, tag in EPOCH_TAGS.items():
        assert [step for step, _ in scalars[tag]] == [int(r["step"]) for r in rows] == [3, 6], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [float(r[column]) for r in rows], rtol=1e-5,
                                   atol=1e-7, err_msg=tag)  # metrics.csv holds 6 significant digits
    step_losses = np.array([v for _, v in scalars["train/loss"]]).reshape(2, 3)
    np.testing.assert_allclose([v for _, v in scalars["train/epoch_loss"]], step_losses.mean(axis=1), rtol=1e-5)
    assert len({v for _, v in scalars["val/loss"]} | {v for _, v in scalars["ema/val_loss"]}) == 4  # all distinct


def test_tensorboard_without_tensorboardx_is_one_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)
    with pytest.raises(ms_vit.ConfigError, match="pip install tensorboardX"):
        fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 1,
                                     "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run"),
                                     "tensorboard": True}), log=lambda *a: None)
