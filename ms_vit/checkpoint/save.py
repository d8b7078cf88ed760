"""Atomic checkpoint writes with ms_vit metadata."""

from __future__ import annotations

import json
import os

from ms_vit.atomic import atomic_path
from ms_vit.checkpoint.read import META_KEY

# A hidden temporary name ending in .ckpt (MindSpore appends .ckpt otherwise): no checkpoint scan picks it up, and
# checkpoint.resume.remove_partial_files clears it after a crash.
TEMP_NAME = ".{name}.{pid}.partial.ckpt"
# The training step's gradient-accumulation buffers: state of one optimizer step, never written to a checkpoint.
TRANSIENT_PREFIX = "grad_accum"


def is_transient(name: str) -> bool:
    """A parameter that exists only within an optimizer step (``train.step``'s accumulation buffers)."""
    return name.startswith(TRANSIENT_PREFIX)


def save_checkpoint(net, path: str, meta: dict | None = None, extra: dict | None = None) -> str:
    """Write ``net``'s parameters to ``path`` atomically, with ``meta`` stored as JSON under ``ms_vit_meta``.

    The file is written to a temporary name in the same folder, flushed to disk, then renamed over ``path``: a
    crash leaves either the old file or the new one, never half of one.

    Args:
        net: a Cell, or a list of {"name", "data"} dicts as ``ms.save_checkpoint`` accepts.
        path: destination ending in ``.ckpt``.
        meta: JSON-serialisable metadata (architecture, class names, preprocessing, training state).
        extra: further scalar entries (e.g. epoch, step) stored beside the parameters.

    Returns:
        The path written.
    """
    import mindspore as ms

    path = os.fspath(path)
    if not path.endswith(".ckpt"):
        raise ValueError(f"checkpoint path {path} must end with .ckpt")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    append = dict(extra or {})
    if meta is not None:
        append[META_KEY] = json.dumps(meta)
    with atomic_path(path, TEMP_NAME) as tmp:
        ms.save_checkpoint(net, tmp, append_dict=append or None, choice_func=lambda name: not is_transient(name))
    return path
