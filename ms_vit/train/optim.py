"""Learning-rate schedule, parameter groups (no weight decay on norms, biases, tokens) and the optimizer."""

from __future__ import annotations

import numpy as np

from ms_vit.models.vit import layer_id, no_weight_decay


def lr_schedule(base_lr: float, min_lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0):
    """Per-step learning rates: linear warmup towards ``base_lr``, then cosine decay from ``base_lr`` to ``min_lr``.

    Warmup step s (of W) takes base_lr * (s + 1) / (W + 1), so the peak is reached once, at the first step after the
    warmup; the cosine then ends exactly at ``min_lr`` on the last step (given at least two decay steps).
    """
    total = steps_per_epoch * epochs
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)
    steps = np.arange(total, dtype=np.float64)
    ramp = base_lr * (steps + 1) / (warmup + 1)
    progress = (steps - warmup) / max(total - warmup - 1, 1)
    cosine = min_lr + 0.5 * (base_lr - min_lr) * (1 + np.cos(np.pi * progress))
    return np.where(steps < warmup, ramp, cosine).astype(np.float32)


def param_groups(params, lrs: np.ndarray, weight_decay: float, layer_decay: float, num_layers: int) -> list[dict]:
    """MindSpore group parameters: one group per (layer scale, decay or not), each with its per-step LR array.

    Which parameters decay and how deep each sits are the model's (``ms_vit.models.vit.no_weight_decay``, ``layer_id``).
    """
    groups: dict[tuple, list] = {}
    for param in params:
        scale = layer_decay ** (num_layers + 1 - layer_id(param.name, num_layers)) if layer_decay < 1 else 1.0
        groups.setdefault((scale, not no_weight_decay(param.name)), []).append(param)
    return [{"params": members, "weight_decay": weight_decay if decay else 0.0,
             "lr": [float(v) for v in lrs * scale]} for (scale, decay), members in sorted(groups.items(),
                                                                                           key=lambda kv: kv[0])]


def create_optimizer(net, optim, steps_per_epoch: int):
    """The optimizer (adam, adamw or sgd) with its schedule and parameter groups, from the optim keys
    (``config.OptimKeys``, ``TrainConfig.section("optim")``)."""
    from mindspore import nn

    lrs = lr_schedule(optim.lr, optim.min_lr, steps_per_epoch, optim.epochs, optim.warmup_epochs)
    groups = param_groups(net.trainable_params(), lrs, optim.weight_decay, optim.layer_decay, net.config.num_layers)
    if optim.optimizer == "adam":
        return nn.Adam(groups, learning_rate=[float(v) for v in lrs], beta1=optim.beta1, beta2=optim.beta2)
    if optim.optimizer == "adamw":
        return nn.AdamWeightDecay(groups, learning_rate=[float(v) for v in lrs], beta1=optim.beta1, beta2=optim.beta2)
    return nn.Momentum(groups, learning_rate=[float(v) for v in lrs], momentum=optim.momentum)
