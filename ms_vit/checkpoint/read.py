"""Read a checkpoint file into a flat dict of NumPy arrays plus its ms_vit metadata."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError

META_KEY = "ms_vit_meta"


@dataclass
class CheckpointFile:
    """What a checkpoint file holds: arrays by name (scalars included), ms_vit metadata and other string entries."""

    path: str
    params: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


def check_file(path: str, what: str = "checkpoint") -> str:
    """Return the path if it names a readable, non-empty file; otherwise raise a one-line CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{what} file {path} does not exist: check the path (or download it into ckpt/)")
    if os.path.isdir(path):
        raise CheckpointError(f"{what} path {path} is a folder: give the .ckpt file inside it")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} file {path} is empty (0 bytes): the download or save was interrupted; "
                              "fetch or write it again")
    return path


def read_checkpoint(path: str) -> CheckpointFile:
    """Read a MindSpore ``.ckpt`` (protobuf, no pickle) into NumPy arrays and metadata.

    Raises:
        CheckpointError: missing, empty, truncated, foreign or unreadable file, with the fix in the message.
    """
    path = check_file(path)
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint file {path} is not a MindSpore .ckpt file (by its name): give a .ckpt "
                              "checkpoint, or rename the file if it is one")
    import mindspore as ms

    try:
        raw = ms.load_checkpoint(path)
    except (ValueError, RuntimeError, TypeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint file {path} cannot be read ({first}): it is truncated, corrupt or not "
                              "a MindSpore checkpoint; download or save it again") from err
    params, extras, meta = {}, {}, {}
    for name, value in raw.items():
        if name == META_KEY:
            try:
                meta = json.loads(value)
            except (TypeError, ValueError) as err:
                raise CheckpointError(f"checkpoint file {path} has unreadable ms_vit metadata: save it again") from err
        elif isinstance(value, str):
            extras[name] = value
        else:
            params[name] = value.asnumpy()
    if not params:
        raise CheckpointError(f"checkpoint file {path} holds no parameters: it is not a model checkpoint")
    return CheckpointFile(path=path, params=params, meta=meta, extras=extras)
