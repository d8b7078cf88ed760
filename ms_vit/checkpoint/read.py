"""Read a checkpoint file into a flat dict of NumPy arrays plus its ms_vit metadata."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ms_vit.errors import CheckpointError

META_KEY = "ms_vit_meta"


PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle")


@dataclass
class CheckpointFile:
    """What a weight file holds: arrays by name (scalars included), ms_vit metadata, other string entries; for an HF
    model folder its config.json and preprocessor_config.json, for a timm hub folder its config.json's
    ``pretrained_cfg`` (its preprocessing)."""

    path: str
    params: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    source_config: dict = field(default_factory=dict)
    preprocessor_config: dict = field(default_factory=dict)
    pretrained_cfg: dict = field(default_factory=dict)


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
    """Read weights, never through pickle: a MindSpore ``.ckpt``, a ``.safetensors`` (timm, HF), a Google ``.npz``
    (``allow_pickle=False``), or a model folder (``config.json`` + ``model.safetensors``) as HF transformers or
    timm's hub upload writes it.

    Raises:
        CheckpointError: missing, empty, truncated, foreign or unreadable file, with the fix in the message.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        return _read_hf_folder(path)
    path = check_file(path)
    if path.endswith(".safetensors"):
        return CheckpointFile(path=path, params=_read_safetensors(path))
    if path.endswith(".npz"):
        return CheckpointFile(path=path, params=_read_npz(path))
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise CheckpointError(f"{path} is a PyTorch pickle file, which ms_vit does not open (unpickling can run code): "
                              "save it as .safetensors (safetensors.torch.save_file, or save_pretrained) and load that")
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint file {path} has an unknown type: ms_vit reads .ckpt, .safetensors, .npz "
                              "and HF model folders (rename the file if it is one of these)")
    return _read_ckpt(path)


def _read_ckpt(path: str) -> CheckpointFile:
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


def _read_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        params = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path} cannot be read as safetensors ({str(err).splitlines()[0]}): it is truncated or "
                              "not a safetensors file; download or save it again") from err
    if not params:
        raise CheckpointError(f"{path} holds no tensors")
    return params


def _read_npz(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise CheckpointError(f"{path} holds pickled Python objects, which ms_vit refuses to load (they can run "
                                  "code): save plain arrays with np.savez") from err
        raise CheckpointError(f"{path} cannot be read as .npz ({err}): download or save it again") from err
    except (OSError, EOFError) as err:
        raise CheckpointError(f"{path} cannot be read as .npz ({type(err).__name__}): it is truncated or not an "
                              ".npz file; download it again") from err


def _read_json(path: str, required: bool = True) -> dict:
    if not required and not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON: download it again") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object: download it again")
    return data


def _read_hf_folder(path: str) -> CheckpointFile:
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise CheckpointError(f"HF model folder {path} has no model.safetensors (pytorch_model.bin is a pickle and is "
                              "not read): save it with save_pretrained(..., safe_serialization=True)")
    config = _read_json(os.path.join(path, "config.json"))
    if "pretrained_cfg" in config and "model_type" not in config:
        # timm's hub layout: its config.json names the architecture and carries the preprocessing, not HF's fields.
        pretrained_cfg = config["pretrained_cfg"]
        if not isinstance(pretrained_cfg, dict):
            raise CheckpointError(f"{path}/config.json: pretrained_cfg must be a JSON object: download it again")
        return CheckpointFile(path=path, params=_read_safetensors(weights), pretrained_cfg=pretrained_cfg)
    return CheckpointFile(path=path, params=_read_safetensors(weights), source_config=config,
                          preprocessor_config=_read_json(os.path.join(path, "preprocessor_config.json"), required=False))
