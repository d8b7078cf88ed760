"""Label-smoothed softmax cross-entropy for integer or soft targets, optionally weighted by class."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops


class CrossEntropySmooth(nn.LossBase):
    """Softmax cross-entropy with label smoothing, computed in fp32.

    Integer labels (B,) become targets of ``1 - smooth_factor`` on the true class and
    ``smooth_factor / (num_classes - 1)`` elsewhere (the MindSpore tutorial's definition). timm's and PyTorch's
    ``label_smoothing`` s spreads s / K over all K classes instead (1 - s + s/K on the true one): that is
    ``smooth_factor = s * (K - 1) / K`` here. Soft targets (B, K), e.g. one-hot or from mixup/cutmix, are used as
    given. This is the training loss only: validation (metrics.csv) and eval.py report the plain cross-entropy.

    ``class_weights`` (``class_balance: loss``, ``data.balance.class_weights``) multiplies each sample's
    cross-entropy by a weight: with integer labels the weight of its true class (label smoothing changes the
    targets, not the weight); with soft targets (mixup/cutmix) the target-weighted class weight sum_k t_k w_k, i.e.
    lambda w_a + (1 - lambda) w_b for a mix of classes a and b, plus the smoothing mass's small share. The reduction
    stays a plain mean over the batch (not divided by the batch's weights): the weights average 1 over the
    training images, so the loss keeps its scale.

    Args:
        smooth_factor: mass moved off the true class, in [0, 1).
        num_classes: K; only checked against the logits' width when labels are integers.
        reduction: "mean", "sum" or "none".
        class_weights: K per-class weights, or None for the unweighted loss.
    """

    def __init__(self, smooth_factor: float = 0.1, num_classes: int = 1000, reduction: str = "mean",
                 class_weights=None):
        super().__init__(reduction=reduction)
        if not 0.0 <= smooth_factor < 1.0:
            raise ValueError(f"smooth_factor must be in [0, 1), got {smooth_factor}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.on_value = ms.Tensor(1.0 - smooth_factor, ms.float32)
        self.off_value = ms.Tensor(smooth_factor / (num_classes - 1), ms.float32)
        # A Python bool, read when the graph compiles: the unweighted loss compiles exactly as before.
        self.weighted = class_weights is not None
        if self.weighted:
            weights = np.asarray(class_weights, np.float32).reshape(-1)
            if weights.shape != (num_classes,) or not np.all(np.isfinite(weights)) or weights.min() < 0:
                raise ValueError(f"class_weights must be {num_classes} finite non-negative numbers, got {weights}")
            self.class_weights = ms.Tensor(weights)

    def construct(self, logits, labels):
        logits = logits.astype(ms.float32)  # fp16 log-softmax loses the small probabilities the smoothing targets
        if labels.ndim == 1:
            targets = ops.one_hot(labels, logits.shape[1], self.on_value, self.off_value)
        else:
            targets = labels.astype(ms.float32)
        # Written out rather than ops.log_softmax: MindSpore's CPU kernel is off by ~3e-6, this form by < 1e-6.
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - ops.log(ops.exp(shifted).sum(axis=-1, keepdims=True))
        loss = -(targets * log_probs).sum(axis=-1)
        if self.weighted:
            if labels.ndim == 1:
                loss = loss * ops.gather(self.class_weights, labels, 0)
            else:
                loss = loss * (targets * self.class_weights).sum(axis=-1)
        return self.get_loss(loss)
