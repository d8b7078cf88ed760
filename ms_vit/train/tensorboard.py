"""``--tensorboard``: the run's scalars as TensorBoard event files in ``output_dir/tensorboard/`` (tensorboardX).

Per optimizer step: ``train/loss`` (the step's mean over its micro-batches), ``train/lr``, ``train/img_s``; per epoch:
``train/epoch_loss``, ``val/loss``, ``val/top_1``, ``val/top_5`` and, with EMA, ``ema/val_loss``, ``ema/top_1``,
``ema/top_5``. The x axis is the global optimizer step. metrics.csv and curves.png are written as before.
"""

from __future__ import annotations

import os
import time

from mindspore.train import Callback

from ms_vit.errors import ConfigError

EPOCH_SCALARS = {"train_loss": "train/epoch_loss", "val_loss": "val/loss", "top_1": "val/top_1", "top_5": "val/top_5",
                 "ema_val_loss": "ema/val_loss", "ema_top_1": "ema/top_1", "ema_top_5": "ema/top_5"}


def open_writer(out_dir: str):
    """A tensorboardX SummaryWriter on ``out_dir/tensorboard``; one clear error when tensorboardX is missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ConfigError("--tensorboard needs the tensorboardX package: pip install tensorboardX (or leave out "
                          "--tensorboard; metrics.csv and curves.png are written either way)") from err
    return SummaryWriter(os.path.join(out_dir, "tensorboard"))


class TensorBoardLog(Callback):
    """Writes the scalars above from the run's ``RunState``; placed after ``EpochEnd`` so the epoch row exists. The
    run closes the writer (``Model.train`` runs once per epoch, so its train-end hook comes every epoch)."""

    def __init__(self, state, writer):
        super().__init__()
        self.state, self.writer = state, writer
        self.step_start = time.perf_counter()

    def on_train_step_end(self, run_context):
        s = self.state
        if not s.losses or not s.between_steps:
            return
        step = s.global_step
        now = time.perf_counter()
        losses = s.losses[-s.accum_steps:]
        self.writer.add_scalar("train/loss", sum(losses) / len(losses), step)
        self.writer.add_scalar("train/lr", s.lr, step)
        self.writer.add_scalar("train/img_s", s.images_per_step / max(now - self.step_start, 1e-9), step)
        self.step_start = now

    def on_train_epoch_end(self, run_context):
        s = self.state
        if not s.history:
            return
        row = s.history[-1]
        step = int(row.get("step", s.global_step))
        for key, tag in EPOCH_SCALARS.items():
            if row.get(key) is not None and row.get(key) != "":
                self.writer.add_scalar(tag, float(row[key]), step)
        self.writer.flush()
