"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename it over the target.

A crash or an error leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os

# The temporary file's name, from the target's: {name} is the target's file name, {pid} this process's id. The
# default is the pattern train._remove_partial_files clears after a crash (``*.<pid>.tmp``).
TEMP_NAME = "{name}.{pid}.tmp"


@contextlib.contextmanager
def atomic_path(path, temp_name: str = TEMP_NAME):
    """Yield a temporary path in ``path``'s folder to write the file to; on success it is flushed to disk and
    renamed over ``path`` (and the rename flushed), on an exception it is removed and ``path`` is left untouched.

    ``temp_name`` names the temporary file after ``path``'s file name (``{name}``) and the process id (``{pid}``):
    writers that pick the format by extension need one that ends like the target (``"{name}.{pid}.tmp.png"``).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    temp_file = temp_name.format(name=name, pid=os.getpid())
    if os.sep in temp_file or temp_file == name:
        raise ValueError(f"temporary name {temp_file!r} must be another file in the same folder as {path}")
    tmp = os.path.join(folder, temp_file)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync(folder)  # the rename itself


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)  # read-only: a file the writer made read-only (MindSpore's checkpoints) too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json_atomic(path, data) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (``atomic_path``)."""
    write_text_atomic(path, json.dumps(data, indent=2))
