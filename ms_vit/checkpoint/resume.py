"""Continuing a run: the output folder's train state (``train_state.json``, written here only), the newest
readable epoch checkpoint loaded back into the train cell (shared over processes in data-parallel runs), the
checkpoint an interrupted run leaves, and the clean-up of writes a crash cut short."""

from __future__ import annotations

import os
import re

from ms_vit.atomic import write_json_atomic
from ms_vit.errors import CheckpointError, ConfigError

STATE_FILE = "train_state.json"


def write_train_state(out_dir: str, checkpoint: str, epoch: int, step_in_epoch: int, global_step: int,
                      best_top1: float) -> None:
    """``train_state.json``: the newest checkpoint (relative to ``out_dir``) and the position it holds."""
    write_json_atomic(os.path.join(out_dir, STATE_FILE),
                      {"checkpoint": os.path.relpath(checkpoint, out_dir), "epoch": epoch,
                       "step_in_epoch": step_in_epoch, "global_step": global_step, "best_top1": best_top1})


def check_output_writable(out_dir: str) -> None:
    """Fail in one line, before any data or weights are fetched, when ``out_dir`` cannot be created or written;
    creates nothing (a run stopped later by bad weights leaves no folder behind)."""
    existing = os.path.abspath(out_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"output folder {out_dir} is not writable: {existing} is a file; choose another --output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {out_dir} is not writable ({existing} is not writable by this user): "
                          "choose another --output_dir")


def prepare_output(out_dir: str) -> None:
    """Create ``out_dir/checkpoints`` and check that it is writable, before anything trains."""
    try:
        os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
        probe = os.path.join(out_dir, f".write_test_{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"output folder {out_dir} is not writable ({err.strerror}): choose another --output_dir") from err


def resume_state(train_cell, out_dir: str, log, rank: int = 0, world: int = 1) -> dict | None:
    """Load the newest readable epoch checkpoint of ``out_dir`` into the train cell; returns its metadata (None when
    there is nothing to resume).

    In a data-parallel run (``world`` > 1) every process calls this, and only rank 0 reads ``out_dir``: processes
    on other machines need not see that disk. Rank 0's train state (weights, optimizer state, counters) and its
    position (epoch, step_in_epoch, global_step, best_top1) reach the other processes by broadcast; the history
    stays on rank 0, the only process that writes metrics.
    """
    if world == 1:
        return _load_newest_state(train_cell, out_dir, log)
    return _share_resume_state(train_cell, out_dir, log, rank)


def _share_resume_state(train_cell, out_dir: str, log, rank: int) -> dict | None:
    import numpy as np

    from ms_vit.distributed import broadcast
    from ms_vit.checkpoint.save import is_transient

    header = np.zeros(5)  # found (1), none (0) or failed (-1); epoch, step_in_epoch, global_step, best_top1
    meta = None
    if rank == 0:
        try:
            meta = _load_newest_state(train_cell, out_dir, log)
        except Exception:
            broadcast([np.array([-1.0, 0, 0, 0, 0])])  # the others stop too rather than wait for a state
            raise
        if meta is not None:
            header = np.array([1.0, meta["epoch"], meta.get("step_in_epoch", 0), meta.get("global_step", 0),
                               meta.get("best_top1", -1.0)])
    found, epoch, step_in_epoch, global_step, best = broadcast([header])[0].tolist()
    if found < 0:
        raise CheckpointError(f"process 0 could not resume from {out_dir} on its machine: see its log")
    if found == 0:
        return None
    import mindspore as ms

    for param in train_cell.get_parameters():  # one at a time: never a second copy of the whole train state
        if not is_transient(param.name):
            value = broadcast([param])[0]
            if rank != 0:
                param.set_data(ms.Tensor(value))
    if rank == 0:
        return meta
    return {"epoch": int(epoch), "step_in_epoch": int(step_in_epoch), "global_step": int(global_step),
            "best_top1": best}


def _load_newest_state(train_cell, out_dir: str, log) -> dict | None:
    import json

    import mindspore as ms

    from ms_vit.checkpoint.read import read_checkpoint
    from ms_vit.checkpoint.save import is_transient

    folder = os.path.join(out_dir, "checkpoints")
    candidates = []
    state_file = os.path.join(out_dir, STATE_FILE)
    if os.path.isfile(state_file):
        try:
            with open(state_file) as handle:
                candidates.append(os.path.join(out_dir, json.load(handle)["checkpoint"]))
        except (ValueError, KeyError, OSError):
            log(f"{state_file} is unreadable: looking at the checkpoints themselves")
    if os.path.isdir(folder):
        candidates += sorted((os.path.join(folder, f) for f in os.listdir(folder)
                              if f.endswith(".ckpt") and not f.startswith(".")), reverse=True)
    readable = []
    for path in dict.fromkeys(candidates):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            log(f"skipping {path}: {err}")
            continue
        if "epoch" in ckpt.meta:
            readable.append(ckpt)
    if not readable:
        return None
    ckpt = max(readable, key=lambda c: (c.meta["epoch"], c.meta.get("step_in_epoch", 0)))
    targets = {p.name: p for p in train_cell.get_parameters() if not is_transient(p.name)}
    missing = [n for n in targets if n not in ckpt.params or tuple(ckpt.params[n].shape) != tuple(targets[n].shape)]
    if missing:
        raise CheckpointError(f"{ckpt.path} does not match this run's model and optimizer ({', '.join(missing[:3])}): "
                              "resume with the same config, or start a new --output_dir")
    ms.load_param_into_net(train_cell, {n: ms.Parameter(ms.Tensor(ckpt.params[n]), name=n) for n in targets},
                           strict_load=True)
    log(f"resumed from {ckpt.path} (epoch {ckpt.meta['epoch']}, step {ckpt.meta['global_step']})")
    return {**ckpt.meta, "checkpoint_path": ckpt.path}


def remove_partial_files(out_dir: str) -> None:
    """Temporary files of writes that a crash interrupted (ours, by their names): never a complete checkpoint."""
    for folder in (out_dir, os.path.join(out_dir, "checkpoints")):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if (name.startswith(".") and name.endswith(".partial.ckpt")) or re.search(r"\.\d+\.tmp(\.png)?$", name):
                os.remove(os.path.join(folder, name))


def save_interrupted(train_cell, out_dir: str, meta: dict, state) -> str:
    """The train state of a run stopped mid-epoch, as ``checkpoints/interrupted.ckpt``; --resume continues it."""
    from ms_vit.checkpoint.save import save_checkpoint

    path = save_checkpoint(train_cell, os.path.join(out_dir, "checkpoints", "interrupted.ckpt"),
                           meta={**meta, "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
                                 "global_step": state.global_step, "best_top1": state.best_top1,
                                 "history": state.history, "interrupted": True})
    write_train_state(out_dir, path, state.epoch, state.step_in_epoch, state.global_step, state.best_top1)
    return path
