"""Checkpoint averaging (timm's avg_checkpoints): one plain checkpoint whose weights are the mean of several.

Only the network's weights are averaged. A run's epoch checkpoints (``OUT/checkpoints/epoch_NNN.ckpt``) hold the
whole training state; what is taken from each:

- the parameters of the ViT its metadata describes (optimizer moments, step counters, the loss scale are left out);
- with ``weights="ema"``, the EMA shadows (``ema.<name>``) instead of the trained weights (a parameter without a
  shadow is a frozen one, the same in both);
- LoRA runs: each file's adapters merged into their layer's weight first, as best.ckpt holds them (the mean of the
  merged weights, not the merge of mean adapters, which would differ);
- linear-probe runs: their epoch checkpoints hold only the classifier; the frozen backbone (the same in every epoch)
  is taken from the run's best.ckpt.

The result is a plain checkpoint like best.ckpt: the newest file's metadata (class names, preprocessing,
architecture) with ``weights: "averaged"`` and ``averaged_from`` listing the files, loadable by
``ms_vit.from_pretrained``, eval.py, infer.py and export.py.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from ms_vit.errors import CheckpointError, ConfigError

EPOCH_PREFIX = "epoch_"
# Which weights of a training checkpoint are averaged: the trained ones, or the EMA's shadows.
WEIGHT_CHOICES = ("trained", "ema")


def epoch_checkpoints(run_dir: str) -> list[str]:
    """The epoch checkpoints of a run's output folder (``checkpoints/epoch_NNN.ckpt``), oldest first."""
    folder = os.path.join(os.fspath(run_dir), "checkpoints")
    if not os.path.isdir(folder):
        raise ConfigError(f"--run_dir {run_dir} has no checkpoints/ folder: give the output folder of a training run "
                          "(its --output_dir), or the files with --ckpts")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.startswith(EPOCH_PREFIX) and name.endswith(".ckpt")]


def _epoch_of(path: str) -> int:
    stem = os.path.basename(path)[len(EPOCH_PREFIX):-len(".ckpt")]
    return int(stem) if stem.isdigit() else -1


def _val_top1(run_dir: str, paths: list, column: str) -> dict:
    """{epoch: val top-1} from the run's metrics.csv, else from the newest checkpoint's metadata history."""
    rows = []
    csv_path = os.path.join(run_dir, "metrics.csv")
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        from ms_vit.checkpoint.read import read_checkpoint

        rows = read_checkpoint(paths[-1]).meta.get("history", [])
    scores = {}
    for row in rows:
        try:
            scores[int(row["epoch"])] = float(row[column])
        except (KeyError, TypeError, ValueError):
            continue
    return scores


def select_checkpoints(run_dir: str, last: int | None = None, best: int | None = None,
                       weights: str = "trained") -> list[str]:
    """The ``last`` newest epoch checkpoints of ``run_dir``, or the ``best`` ones by val top-1 (the EMA's with
    ``weights="ema"``; ties go to the later epoch), among those the run kept (its last ``keep_checkpoints``).
    Returned oldest first."""
    count = last if last is not None else best
    option = "--last" if last is not None else "--best"
    if count is None or count < 2:
        raise ConfigError(f"{option} must be at least 2 (averaging one checkpoint changes nothing), got {count}")
    paths = epoch_checkpoints(run_dir)
    if count > len(paths):
        kept = ", ".join(os.path.basename(p) for p in paths) or "none"
        raise ConfigError(f"{option} {count}: {os.path.join(run_dir, 'checkpoints')} holds {len(paths)} epoch "
                          f"checkpoints ({kept}); a run keeps its last keep_checkpoints: ask for at most {len(paths)}, "
                          "or train with a larger keep_checkpoints")
    if last is not None:
        return paths[-count:]
    column = "ema_top_1" if weights == "ema" else "top_1"
    scores = _val_top1(run_dir, paths, column)
    unknown = [os.path.basename(p) for p in paths if _epoch_of(p) not in scores]
    if unknown:
        raise ConfigError(f"--best: {os.path.join(run_dir, 'metrics.csv')} records no {column} for "
                          f"{', '.join(unknown)}: use --last or --ckpts")
    ranked = sorted(paths, key=lambda p: (scores[_epoch_of(p)], _epoch_of(p)), reverse=True)[:count]
    return sorted(ranked, key=_epoch_of)


def _model_names(meta: dict, cache: dict) -> list | None:
    """The parameter names, in order, of the ViT a checkpoint's metadata describes (None without metadata)."""
    model = meta.get("model")
    if not model:
        return None
    key = json.dumps(model, sort_keys=True)
    if key not in cache:
        from ms_vit.config import ViTConfig
        from ms_vit.models.vit import ViT

        cache[key] = [p.name for p in ViT(ViTConfig(**model)).get_parameters()]
    return cache[key]


def _merge_lora(params: dict, meta: dict, path: str) -> dict:
    """``params`` with every ``X.lora_a``/``X.lora_b`` pair merged into ``X.weight`` (W + alpha / r * B A, in
    float64) and the adapters dropped, as ``train.lora.merged_parameters`` writes best.ckpt."""
    from ms_vit.train.lora import merge_weight

    adapters = sorted(name[: -len(".lora_a")] for name in params if name.endswith(".lora_a"))
    if not adapters:
        return params
    alpha = (meta.get("train_config") or {}).get("lora_alpha")
    if alpha is None:
        raise CheckpointError(f"{path} holds LoRA adapters but its metadata records no lora_alpha: average the runs' "
                              "best.ckpt files (merged weights) with --ckpts instead")
    out = dict(params)
    for layer in adapters:
        a, b = params[f"{layer}.lora_a"], params[f"{layer}.lora_b"]
        weight = params[f"{layer}.weight"]
        merged = merge_weight(weight.astype(np.float64), a.astype(np.float64), b.astype(np.float64), alpha / a.shape[0])
        out[f"{layer}.weight"] = merged.astype(weight.dtype)
        del out[f"{layer}.lora_a"], out[f"{layer}.lora_b"]
    return out


def _backbone_of_linear_run(path: str) -> dict:
    """The weights of the run's best.ckpt (``<run>/best.ckpt`` beside ``<run>/checkpoints/``): a linear probe's
    frozen backbone, the same in every epoch."""
    from ms_vit.checkpoint.read import read_checkpoint

    best = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "best.ckpt")
    if not os.path.isfile(best):
        raise CheckpointError(f"{path} is an epoch checkpoint of a linear-probe run (it holds only the classifier) "
                              f"and the run's {best}, which holds its frozen backbone, is missing")
    return read_checkpoint(best).params


def model_weights_of(ckpt, weights: str = "trained", cache: dict | None = None) -> dict:
    """{name: array} of the network weights in a ``CheckpointFile`` (see the module's docstring for what is taken
    from a training checkpoint), in the network's parameter order."""
    from ms_vit.checkpoint.adapt import split_optimizer_state
    from ms_vit.train.ema import EMA_PREFIX

    params, meta, path = ckpt.params, ckpt.meta, ckpt.path
    shadow = {name[len(EMA_PREFIX) + 1:]: value for name, value in params.items()
              if name.startswith(EMA_PREFIX + ".") and name != f"{EMA_PREFIX}.updates"}
    if weights == "ema":
        if not shadow:
            raise ConfigError(f"--weights ema: {path} holds no EMA weights (the run had ema_decay 0): leave "
                              "--weights out to average the trained weights")
        params = {**params, **shadow}
    params = {name: value for name, value in params.items() if not name.startswith(EMA_PREFIX + ".")}
    params = _merge_lora(params, meta, path)
    names = _model_names(meta, {} if cache is None else cache)
    if names is None:  # no ms_vit metadata: every float entry that is not optimizer or loop state
        params, _ = split_optimizer_state(params)
        return {name: value for name, value in params.items() if np.issubdtype(value.dtype, np.floating)}
    missing = [name for name in names if name not in params]
    if missing and meta.get("finetune_mode") == "linear":
        backbone = _backbone_of_linear_run(path)
        params = {**{name: backbone[name] for name in missing if name in backbone}, **params}
        missing = [name for name in names if name not in params]
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} of its model's parameters ({missing[0]}, ...): it is "
                              "not a complete checkpoint of the architecture its metadata names")
    return {name: params[name] for name in names}


def _check_same(first, first_weights: dict, other, weights: dict) -> None:
    """One line naming both files when ``other`` is another architecture or class list than ``first``."""
    a, b = first.path, other.path
    model_a, model_b = first.meta.get("model"), other.meta.get("model")
    if model_a and model_b and model_a != model_b:
        keys = sorted(k for k in set(model_a) | set(model_b) if model_a.get(k) != model_b.get(k))
        shown = ", ".join(f"{k} {model_a.get(k)!r} vs {model_b.get(k)!r}" for k in keys[:3])
        raise CheckpointError(f"{a} and {b} are different architectures ({shown}): average checkpoints of one model")
    if set(first_weights) != set(weights):
        extra = sorted(set(first_weights) ^ set(weights))
        raise CheckpointError(f"{a} and {b} are different architectures (parameter {extra[0]} is in only one of "
                              "them): average checkpoints of one model")
    for name, value in first_weights.items():
        if value.shape != weights[name].shape:
            raise CheckpointError(f"{a} and {b} are different architectures (parameter {name} has shape "
                                  f"{tuple(value.shape)} vs {tuple(weights[name].shape)}): average checkpoints of one "
                                  "model")
    names_a, names_b = first.meta.get("class_names"), other.meta.get("class_names")
    if names_a is not None and names_b is not None and list(names_a) != list(names_b):
        differ = next((i for i, (x, y) in enumerate(zip(names_a, names_b)) if x != y), min(len(names_a), len(names_b)))
        what = (f"class {differ} is {names_a[differ]!r} vs {names_b[differ]!r}"
                if differ < min(len(names_a), len(names_b)) else f"{len(names_a)} vs {len(names_b)} classes")
        raise CheckpointError(f"{a} and {b} have different class lists ({what}): average checkpoints fine-tuned on "
                              "the same classes")


def average_checkpoints(paths: list, weights: str = "trained") -> tuple[dict, dict]:
    """({name: mean array}, metadata) of the network weights in ``paths`` (files ms_vit reads).

    Every float parameter is averaged in float64 and cast back to its dtype (so averaging copies of one file gives
    it back bit for bit); any other parameter must be equal in every file. The metadata is the newest file's (the
    one with the highest epoch, else the last given) with ``weights: "averaged"``, ``averaged_weights`` (trained or
    EMA) and ``averaged_from`` (the files).

    Raises:
        ConfigError: fewer than 2 files, an unknown ``weights``.
        CheckpointError: files of different architectures, parameter shapes or class lists (one line naming them).
    """
    from ms_vit.checkpoint.read import read_checkpoint

    paths = [os.fspath(p) for p in paths]
    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"--weights {weights!r} is not one of {', '.join(WEIGHT_CHOICES)}")
    if len(paths) < 2:
        raise ConfigError(f"averaging needs at least 2 checkpoints, got {len(paths)}"
                          + (f" ({paths[0]})" if paths else "") + ": give more files, or a larger --last / --best")
    cache: dict = {}
    first = first_weights = total = None
    newest, newest_rank = None, None
    for index, path in enumerate(paths):
        ckpt = read_checkpoint(path)  # one file at a time: only the running sum stays in memory
        current = model_weights_of(ckpt, weights, cache)
        if first is None:
            first, first_weights = ckpt, current
            total = {name: value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value
                     for name, value in current.items()}
        else:
            _check_same(first, first_weights, ckpt, current)
            for name, value in current.items():
                if np.issubdtype(first_weights[name].dtype, np.floating):
                    total[name] += value.astype(np.float64)
                elif not np.array_equal(value, first_weights[name]):
                    raise CheckpointError(f"{first.path} and {path} differ in the non-float parameter {name}, which "
                                          "cannot be averaged: average checkpoints of one model")
        epoch = ckpt.meta.get("epoch")
        rank = (epoch if isinstance(epoch, int) else -1, index)  # the highest epoch; among equals, the later file
        if newest is None or rank > newest_rank:
            newest, newest_rank = ckpt.meta, rank
    count = len(paths)
    averaged = {name: (value / count).astype(first_weights[name].dtype)
                if np.issubdtype(first_weights[name].dtype, np.floating) else value for name, value in total.items()}
    meta = {**(newest or {}), "weights": "averaged", "averaged_weights": weights,
            "averaged_from": [os.path.abspath(p) for p in paths]}
    return averaged, meta


def write_average(paths: list, output: str, weights: str = "trained") -> str:
    """Average ``paths`` (``average_checkpoints``) and write the result to ``output`` atomically with ms_vit's
    ``save_checkpoint``. Returns the path written."""
    import mindspore as ms

    from ms_vit.checkpoint.save import save_checkpoint

    output = os.fspath(output)
    if not output.endswith(".ckpt"):
        raise ConfigError(f"--output {output} must end with .ckpt")
    if os.path.abspath(output) in {os.path.abspath(p) for p in paths}:
        raise ConfigError(f"--output {output} is one of the checkpoints being averaged: write to another file")
    averaged, meta = average_checkpoints(paths, weights)
    return save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in averaged.items()], output,
                           meta=meta)
