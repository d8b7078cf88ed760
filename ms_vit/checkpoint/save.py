"""Atomic checkpoint writes with ms_vit metadata."""

from __future__ import annotations

import json
import os
import tempfile

from .read import META_KEY


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

    from ..train_step import is_transient

    path = os.fspath(path)
    if not path.endswith(".ckpt"):
        raise ValueError(f"checkpoint path {path} must end with .ckpt")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    append = dict(extra or {})
    if meta is not None:
        append[META_KEY] = json.dumps(meta)
    # A hidden temporary name ending in .ckpt (MindSpore appends .ckpt otherwise) that no checkpoint scan picks up.
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial.ckpt", dir=folder)
    os.close(fd)
    try:
        ms.save_checkpoint(net, tmp, append_dict=append or None, choice_func=lambda name: not is_transient(name))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
