"""--tensorboard: the run's scalars as TensorBoard event files, readable back; one clear line without tensorboardX."""

import glob
import struct

import pytest
from conftest import TINY, make_image_folder

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.train import fine_tune


def read_scalars(folder) -> dict:
    """{tag: [(step, value)]} from every event file under ``folder`` (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True)):
        with open(path, "rb") as handle:
            blob = handle.read()
        offset = 0
        while offset < len(blob):
            (length,) = struct.unpack("<Q", blob[offset:offset + 8])
            event = Event.FromString(blob[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_events_hold_loss_lr_accuracy_speed_and_ema(tmp_path):
    pytest.importorskip("tensorboardX")
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)
    out = tmp_path / "run"
    fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 2, "lr": 1e-3,
                                 "data_dir": str(tmp_path / "data"), "output_dir": str(out), "tensorboard": True,
                                 "ema_decay": 0.9, "num_workers": 1}), log=lambda *a: None)
    scalars = read_scalars(out / "tensorboard")
    for tag in ("train/loss", "train/lr", "train/img_s"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4, 5, 6]  # 3 steps per epoch, 2 epochs
    for tag in ("val/loss", "val/top_1", "val/top_5", "train/epoch_loss", "ema/top_1", "ema/val_loss"):
        assert [step for step, _ in scalars[tag]] == [3, 6]
    with open(out / "metrics.csv") as handle:
        last = handle.read().splitlines()[-1].split(",")
    assert abs(scalars["val/top_1"][-1][1] - float(last[4])) < 1e-6  # the same number as metrics.csv


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
