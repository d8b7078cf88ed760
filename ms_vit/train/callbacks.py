"""Training callbacks: a progress line, and per-epoch validation with metrics.csv, curves and checkpoints."""

from __future__ import annotations

import csv
import os
import time

import mindspore as ms
import numpy as np
from mindspore import nn
from mindspore.train import Callback

from ms_vit.evaluate import metrics
from ms_vit.atomic import atomic_path
from ms_vit.checkpoint.resume import write_train_state
from ms_vit.checkpoint.save import save_checkpoint
from ms_vit.errors import MsVitError


class TrainingDiverged(MsVitError):
    """The loss or the gradients became NaN or infinite."""


METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "top_1", "top_5", "lr", "epoch_s", "img_s")
EMA_COLUMNS = ("ema_val_loss", "ema_top_1", "ema_top_5")  # with ema_decay > 0


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunState:
    """What the callbacks share over a run: position, losses of the current epoch, history, best top-1.

    Steps are optimizer steps; with gradient accumulation each is ``accum_steps`` Model steps (micro-batches), and
    ``losses`` holds one loss per micro-batch.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, images_per_step: int, lrs: np.ndarray,
                 history: list | None = None, best_top1: float = -1.0, accum_steps: int = 1):
        self.accum_steps = accum_steps
        self.epochs, self.steps_per_epoch, self.images_per_step, self.lrs = epochs, steps_per_epoch, images_per_step, lrs
        self.history = list(history or [])
        self.best_top1 = best_top1
        self.epoch = 0
        self.losses: list[float] = []
        self.skipped_steps = 0
        self.epoch_start = time.perf_counter()
        self.step_offset = 0  # steps of the current epoch done before a resume
        self.interrupted = False  # set by train.interrupt's handler; the step loop stops between optimizer steps
        self.dynamic_scale = False  # under dynamic loss scaling an overflow is skipped, not a failure
        self.last_checkpoint = ""

    @property
    def step_in_epoch(self) -> int:
        return self.step_offset + len(self.losses) // self.accum_steps

    @property
    def between_steps(self) -> bool:
        """No micro-batch of an unfinished optimizer step is pending."""
        return len(self.losses) % self.accum_steps == 0

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    @property
    def lr(self) -> float:
        """The learning rate of the last optimizer step taken."""
        return float(self.lrs[min(self.global_step, len(self.lrs)) - 1])


class Progress(Callback):
    """Every ``every`` steps: ``epoch e/E step s/S loss x lr y img/s z ETA h:mm:ss`` (tqdm-like, one line)."""

    def __init__(self, state: RunState, every: int = 10, log=print):
        super().__init__()
        self.state, self.every, self.log = state, every, log

    def on_train_epoch_begin(self, run_context):
        s = self.state
        s.epoch = run_context.original_args().cur_epoch_num - 1
        s.losses, s.epoch_start = [], time.perf_counter()

    def on_train_step_end(self, run_context):
        s = self.state
        loss, overflow, _ = run_context.original_args().net_outputs
        value = float(loss.asnumpy())
        if bool(overflow.asnumpy()):
            s.skipped_steps += 1
            if not s.dynamic_scale or not np.isfinite(value):
                kept = f"the last good checkpoint is {s.last_checkpoint}" if s.last_checkpoint else "no checkpoint yet"
                raise TrainingDiverged(f"training diverged at step {s.global_step + 1} (epoch {s.epoch + 1}): loss "
                                       f"{value:.4g}, gradients not finite; the step was not applied and {kept}: "
                                       "lower --lr, set --clip_grad_norm, or check the data")
        s.losses.append(value)
        if not s.between_steps:  # stop and report only between optimizer steps: never with half-accumulated gradients
            return
        step = s.step_in_epoch
        if step % self.every and step != s.steps_per_epoch:
            return
        elapsed = time.perf_counter() - s.epoch_start
        per_step = elapsed / max(len(s.losses) // s.accum_steps, 1)
        remaining = (s.steps_per_epoch - step) + (s.epochs - s.epoch - 1) * s.steps_per_epoch
        lr = s.lr
        self.log(f"epoch {s.epoch + 1}/{s.epochs} step {step}/{s.steps_per_epoch} loss {s.losses[-1]:.4f} "
                 f"lr {lr:.3g} {s.images_per_step / per_step:.1f} img/s ETA {_format_eta(per_step * remaining)}")


def val_sums(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[images, top-1 hits, top-5 hits, summed cross-entropy] of a batch of logits against integer labels.

    The loss is the plain (unsmoothed) softmax cross-entropy in float64, counted by ``metrics`` as
    ``evaluate.summarize`` counts it, so metrics.csv and eval.py report the same number for the same weights and
    images; top-k as there (k = min(5, K)).
    """
    top = metrics.top_k(logits, 5)
    return np.array([len(labels), metrics.in_top(top[:, :1], labels).sum(), metrics.in_top(top, labels).sum(),
                     metrics.cross_entropy_sum(logits, labels)], np.float64)


class EvalLogits(nn.Cell):
    """``net``'s logits in float32 (an fp16 AMP network's too): the compiled forward pass of validation."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, images):
        return self.net(images).astype(ms.float32)


def validate(eval_net, batches, reduce=None) -> dict:
    """Top-1, top-5 and the mean plain cross-entropy of ``eval_net`` (logits) over ``batches`` (image, label).

    Averages are over images, so a smaller last batch weighs by its images, not as a whole batch. In data-parallel
    runs each process passes its shard of the validation images and ``reduce`` (``distributed.all_reduce_sum``):
    the sums are added over processes, and every process returns the metrics of the whole set.
    ``local_images`` is the number of images this process evaluated.
    """
    sums = np.zeros(4)
    for images, labels in batches.create_tuple_iterator(num_epochs=1, output_numpy=True):
        sums += val_sums(eval_net(ms.Tensor(images)).asnumpy(), labels)
    local = int(sums[0])
    if reduce is not None:
        sums = reduce(sums)
    count = max(sums[0], 1.0)
    return {"images": int(round(sums[0])), "local_images": local, "top_1": sums[1] / count, "top_5": sums[2] / count,
            "loss": sums[3] / count}


class EpochEnd(Callback):
    """After each epoch: validate, then (on the writing process) metrics.csv, curves.png and checkpoints.

    Checkpoints: ``checkpoints/epoch_NNN.ckpt`` (the whole train state: weights, optimizer, step; the last
    ``keep`` are kept) and ``best.ckpt`` (weights of the best val top-1). Each carries metadata so eval, infer and
    --resume need nothing else; ``train_state.json`` names the newest. All writes are atomic.

    Validation (``validate``) runs ``net`` in eval mode over ``val_data``, this process's shard of the validation
    images; ``reduce`` (data-parallel runs: ``distributed.all_reduce_sum``) adds the shards' sums, and the
    processes' training losses, so every process logs (and rank 0 writes) the metrics of the whole run.

    With an EMA (``train_cell.ema``) each epoch validates the trained weights and the EMA's; ``best.ckpt`` holds
    whichever has the better top-1 (its metadata's ``weights`` says which: "trained" or "ema").
    ``eval_net``: what validation runs on a batch of ``val_data`` (default: ``net`` on images; the linear probe's
    head on features). ``export``: what ``best.ckpt`` holds, a Cell or a parameter list (default ``net``; LoRA
    runs: the merged weights).
    """

    def __init__(self, state: RunState, val_data, train_cell, net, out_dir: str, meta: dict, keep: int = 2,
                 is_writer: bool = True, log=print, reduce=None, eval_net=None, export=None):
        super().__init__()
        self.state, self.val_data, self.reduce = state, val_data, reduce
        self.eval_net = EvalLogits(eval_net or net)
        self.ema = getattr(train_cell, "ema", None)
        self.export = export or (lambda: net)
        self.train_cell, self.net, self.out_dir, self.meta = train_cell, net, out_dir, meta
        self.keep, self.is_writer, self.log = keep, is_writer, log

    def _validate(self) -> tuple[dict, dict | None]:
        """Metrics of the trained weights, and of the EMA's (None without EMA)."""
        training = self.net.training
        self.net.set_train(False)
        self.eval_net.set_train(False)
        try:
            result = validate(self.eval_net, self.val_data, self.reduce)
            if self.ema is None:
                return result, None
            with self.ema.swapped_in():
                return result, validate(self.eval_net, self.val_data, self.reduce)
        finally:
            self.net.set_train(training)

    def on_train_epoch_end(self, run_context):
        s = self.state
        if s.interrupted and s.step_in_epoch < s.steps_per_epoch:  # partial: fit saves interrupted.ckpt
            return
        epoch = run_context.original_args().cur_epoch_num
        seconds = time.perf_counter() - s.epoch_start
        result, ema = self._validate()
        losses = np.array([np.sum(s.losses), len(s.losses)], np.float64)
        if self.reduce is not None:  # every process's micro-batches, as one process would have seen the batch
            losses = self.reduce(losses)
        row = {"epoch": epoch, "step": s.global_step,
               "train_loss": float(losses[0] / losses[1]) if losses[1] else float("nan"),
               "val_loss": float(result["loss"]), "top_1": float(result["top_1"]), "top_5": float(result["top_5"]),
               "lr": float(s.lrs[s.global_step - 1]), "epoch_s": seconds,
               "img_s": len(s.losses) / s.accum_steps * s.images_per_step / seconds}
        if ema is not None:
            row.update(ema_val_loss=float(ema["loss"]), ema_top_1=float(ema["top_1"]), ema_top_5=float(ema["top_5"]))
        s.step_offset = 0
        s.history.append(row)
        weights = "ema" if ema is not None and row["ema_top_1"] > row["top_1"] else "trained"
        top_1 = row["ema_top_1"] if weights == "ema" else row["top_1"]
        improved = top_1 > s.best_top1
        s.best_top1 = max(s.best_top1, top_1)
        self.log(f"epoch {epoch}/{s.epochs} train loss {row['train_loss']:.4f} val loss {row['val_loss']:.4f} "
                 f"top-1 {row['top_1']:.4f} top-5 {row['top_5']:.4f}"
                 + (f" | EMA val loss {row['ema_val_loss']:.4f} top-1 {row['ema_top_1']:.4f} top-5 "
                    f"{row['ema_top_5']:.4f}" if ema is not None else "")
                 + f" ({seconds:.0f} s)" + (f" best{' (EMA)' * (weights == 'ema')}" if improved else ""))
        if self.is_writer:  # rank 0 writes the outputs; every process validates
            self.write(epoch, improved, weights)

    def write(self, epoch: int, improved: bool, weights: str = "trained") -> None:
        s = self.state
        write_metrics_csv(os.path.join(self.out_dir, "metrics.csv"), s.history)
        plot_curves(os.path.join(self.out_dir, "curves.png"), s.history)
        meta = {**self.meta, "epoch": epoch, "global_step": s.global_step, "best_top1": s.best_top1,
                "history": s.history}
        folder = os.path.join(self.out_dir, "checkpoints")
        path = save_checkpoint(self.train_cell, os.path.join(folder, f"epoch_{epoch:03d}.ckpt"), meta=meta)
        s.last_checkpoint = path
        if improved:
            best = os.path.join(self.out_dir, "best.ckpt")
            if weights == "ema":
                with self.ema.swapped_in():
                    save_checkpoint(self.export(), best, meta={**meta, "weights": "ema"})
            else:
                save_checkpoint(self.export(), best, meta={**meta, "weights": "trained"})
        write_train_state(self.out_dir, path, epoch, 0, s.global_step, s.best_top1)
        for old in sorted(f for f in os.listdir(folder) if f.startswith("epoch_") and f.endswith(".ckpt"))[:-self.keep]:
            os.remove(os.path.join(folder, old))
        interrupted = os.path.join(folder, "interrupted.ckpt")
        if os.path.exists(interrupted):  # superseded by a complete epoch
            os.remove(interrupted)


def write_metrics_csv(path: str, history: list) -> None:
    columns = METRIC_COLUMNS + (EMA_COLUMNS if any("ema_top_1" in row for row in history) else ())
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_curves(path: str, history: list) -> None:
    """Loss (train, val) and val top-1/top-5 against epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    left.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [r["top_1"] for r in history], "o-", label="top-1")
    right.plot(epochs, [r["top_5"] for r in history], "o-", label="top-5")
    if any("ema_top_1" in r for r in history):
        right.plot(epochs, [r.get("ema_top_1", float("nan")) for r in history], "s--", label="EMA top-1")
    right.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy", ylim=(0, 1.02))
    right.legend()
    fig.tight_layout()
    with atomic_path(path, "{name}.{pid}.tmp.png") as tmp:  # savefig picks the format by the extension
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
