"""MindSpore's compile cache for training runs, in a folder keyed by everything that shapes the graphs.

MindSpore (``MS_COMPILER_CACHE_ENABLE``/``MS_COMPILER_CACHE_PATH``) saves each compiled graph and loads it in a later
process; a resumed or repeated run then skips most of the first step's compilation (ViT-B/16: bench/NOTES.md).
MindSpore checks only the entry script and the modules outside ``sys.path`` for changes, so an installed ``ms_vit``
edited in place, another model size, config or MindSpore version would reuse a stale graph. Here each such
combination gets its own folder, ``output_dir/compile_cache/<key>``, the key a hash of MindSpore's version, the
ms_vit sources, the model's configuration, the run's configuration and the shapes the run derives from its data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

ENV_ENABLE, ENV_PATH = "MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"


def source_digest() -> str:
    """SHA-256 over the ms_vit package's Python sources (names and contents), in sorted order."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the whole ms_vit package
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def cache_key(train_config: dict, model_config: dict, shapes: dict, mindspore_version: str | None = None,
              sources: str | None = None) -> str:
    """A 16-hex-digit key of everything a compiled training graph depends on.

    Args:
        train_config: the run's keys that shape a graph (``TrainConfig.graph_values()``: the schema leaves out the
            keys declared ``graph=False``, e.g. output_dir and resume, so a resumed run or a run into another folder
            shares the cache of the run it repeats).
        model_config: the built network's ``ViTConfig.to_dict()`` (numerics from the weights included).
        shapes: what the run derives from its data and device (classes, steps per epoch, AMP level, processes ...).
        mindspore_version, sources: default to the installed MindSpore's version and ``source_digest()``.
    """
    if mindspore_version is None:
        import mindspore

        mindspore_version = mindspore.__version__
    parts = {"mindspore": mindspore_version, "python": sys.version_info[:2], "ms_vit": sources or source_digest(),
             "model": model_config, "shapes": shapes,
             "train": train_config}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def entry_script() -> str | None:
    """The script this process runs (``sys.argv[0]``), or None when there is no such file (``python -c``, a REPL, a
    pytest-xdist worker): MindSpore's cache parses the entry script for the files a graph depends on and fails
    without one."""
    path = sys.argv[0] if sys.argv else ""
    return path if path and os.path.isfile(path) else None


def enable(out_dir: str, key: str) -> tuple[str, bool]:
    """Point MindSpore's compile cache at ``out_dir/compile_cache/<key>`` for the graphs this process compiles from
    now on; returns (folder, whether it already holds graphs of an earlier run)."""
    folder = os.path.abspath(os.path.join(out_dir, "compile_cache", key))
    warm = os.path.isdir(folder) and any(files for _, _, files in os.walk(folder))
    os.makedirs(folder, exist_ok=True)
    os.environ[ENV_ENABLE], os.environ[ENV_PATH] = "1", folder
    return folder, warm


def disable() -> None:
    """Stop caching for graphs compiled after this call (a later run in the same process chooses again)."""
    os.environ.pop(ENV_ENABLE, None)
    os.environ.pop(ENV_PATH, None)
