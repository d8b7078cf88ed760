"""Layers that the ViT and TokenLearner share: Dense with the ViT init, fp32 LayerNorm and softmax, GELU forms.

Both ``model`` and ``token_learner`` import from here, so neither imports the other's module for its pieces.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, Zero


def softmax_fp32(x, axis: int = -1):
    """Softmax computed in fp32, returned in ``x``'s dtype.

    Under AMP O2 the activations are fp16, whose exponentials overflow past 11; every softmax of the model (the
    attention's and TokenLearner's) goes through here.
    """
    return ops.softmax(x.astype(ms.float32), axis=axis).astype(x.dtype)


def dense_layer(in_features: int, out_features: int) -> nn.Dense:
    return nn.Dense(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init=Zero())


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters, same epsilon default) that always normalises in fp32.

    Under AMP O2 the activations are fp16; a fp16 variance over 768 channels overflows or loses the small
    differences that matter, a known source of NaN in ViTs, so the statistics are computed in fp32.
    """

    def construct(self, x):
        y, _, _ = self.layer_norm(x.astype(ms.float32), self.gamma.astype(ms.float32), self.beta.astype(ms.float32))
        return y.astype(x.dtype)


class SigmoidGELU(nn.Cell):
    """The tanh-approximation GELU, 0.5 x (1 + tanh(c (x + 0.044715 x^3))), written as x * sigmoid(2c x (1 + 0.044715 x^2))
    (tanh(z) = 2 sigmoid(2z) - 1). On CPU, MindSpore's GELU kernel takes ~170 ms on a ViT-B block's (16, 197, 3072)
    activations, this ~21 ms, and it stays within 1e-6 of the kernel (MindSpore's CPU tanh is 1e-4 off; its sigmoid is
    not)."""

    def __init__(self):
        super().__init__()
        self.scale = 2.0 * math.sqrt(2.0 / math.pi)

    def construct(self, x):
        return x * ops.sigmoid(self.scale * x * (1.0 + 0.044715 * x * x))

    def bprop(self, x, out, dout):
        # Recompute from x instead of keeping the forward's four intermediates of (B, T, mlp_dim) for backward.
        x2 = x * x
        s = ops.sigmoid(self.scale * x * (1.0 + 0.044715 * x2))
        return (dout * (s + x * s * (1.0 - s) * self.scale * (1.0 + 3 * 0.044715 * x2)),)


def gelu_cell(form: str, impl: str) -> nn.Cell:
    """The GELU of ``form`` ("tanh" or "erf"); ``impl`` "auto" takes the elementwise tanh form on CPU."""
    if impl == "auto":
        impl = "elementwise" if ms.get_context("device_target") == "CPU" else "kernel"
    if form == "tanh" and impl == "elementwise":
        return SigmoidGELU()
    return nn.GELU(approximate=form == "tanh")  # exact erf: MindSpore's kernel (no faster exact form found, bench/NOTES.md)


