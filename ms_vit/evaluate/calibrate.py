"""Temperature scaling (Guo et al., 2017): one temperature T > 0 for a checkpoint's logits, fitted on held-out
images by minimising the NLL of softmax(logits / T), stored in the checkpoint's metadata (key ``temperature``).

Dividing every logit by one positive number changes no ranking (top-1, top-5 and the F1s stay the same); it only
makes the probabilities softer (T > 1) or sharper (T < 1). eval.py's loss and ECE and infer.py's probabilities use
the stored temperature.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ms_vit.errors import CheckpointError, ConfigError
from ms_vit.evaluate import metrics

META_KEY = "temperature"
# Searched over log T: 1/100 to 100 holds any temperature a trained classifier needs (a fit at a bound is
# reported as such, since it means the held-out images say little).
BOUNDS = (0.01, 100.0)


def mean_nll(logits, labels, temperature: float = 1.0) -> float:
    """The mean cross-entropy of softmax(logits / temperature) against integer labels (float64)."""
    return float(metrics.cross_entropy_sum(np.asarray(logits, np.float64) / temperature, labels) / len(labels))


def fit_temperature(logits, labels, bounds: tuple[float, float] = BOUNDS) -> float:
    """The temperature T in ``bounds`` that minimises ``mean_nll(logits, labels, T)``: SciPy's bounded scalar
    minimisation over log T (the NLL is smooth in log T and the search is then scale-free)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if not len(labels):
        raise ConfigError("no images to fit a temperature on: give a folder of labelled held-out images")
    result = minimize_scalar(lambda log_t: mean_nll(logits, labels, math.exp(log_t)),
                             bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-6})
    return float(math.exp(result.x))


def stored_temperature(meta: dict, path: str = "checkpoint") -> float:
    """The temperature of a checkpoint's metadata (1.0 when it has none); a value that is not a positive finite
    number is a CheckpointError naming the file."""
    value = meta.get(META_KEY, 1.0) if meta else 1.0
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"{path}: metadata key {META_KEY!r} is {meta.get(META_KEY)!r}, not a positive number: "
                              "fit it again (python scripts/calibrate.py --ckpt ... --data_dir HELD_OUT)")
    return value


def write_temperature(ckpt: str, temperature: float, output: str | None = None, record: dict | None = None) -> str:
    """Store ``temperature`` (and ``record``, what it was fitted on, under ``calibration``) in the metadata of the
    MindSpore checkpoint ``ckpt``: rewritten in place (atomically: a crash leaves the old file or the new one), or
    written to ``output``. Every parameter, every other metadata key (architecture, class names, preprocessing,
    training state) and every other entry stays as it was."""
    import mindspore as ms

    from ms_vit.checkpoint.read import read_checkpoint
    from ms_vit.checkpoint.save import save_checkpoint

    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature {temperature} must be a positive number")
    if not os.fspath(ckpt).endswith(".ckpt"):
        raise CheckpointError(f"{ckpt}: the temperature is stored in a MindSpore .ckpt's metadata; convert the file "
                              "first (python scripts/convert.py) and calibrate the .ckpt it writes")
    target = os.fspath(output or ckpt)
    if not target.endswith(".ckpt"):
        raise ConfigError(f"--output {target} must end with .ckpt")
    source = read_checkpoint(ckpt)
    meta = {**source.meta, META_KEY: float(temperature)}
    if record is not None:
        meta["calibration"] = record
    params = [{"name": name, "data": ms.Tensor(value)} for name, value in source.params.items()]
    return save_checkpoint(params, target, meta=meta, extra=source.extras)
