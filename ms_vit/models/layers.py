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


def _on_cpu() -> bool:
    return ms.get_context("device_target") == "CPU"


def _row_sum(x2d, scale: float = 1.0):
    """Sum (times ``scale``) over the last axis of a 2-D tensor, as a matrix-vector product: MindSpore's CPU
    back-end runs the GEMV far faster than its ReduceSum (bench/NOTES.md, attempt 17)."""
    return ops.matmul(x2d, ops.ones((x2d.shape[-1], 1), x2d.dtype) * scale)


class Softmax(nn.Cell):
    """``softmax_fp32`` over the last axis as a Cell, so that CPU runs can give it a faster backward."""

    def construct(self, x):
        return softmax_fp32(x, -1)


class RowSoftmax(Softmax):
    """The same softmax whose backward, (dy - sum(dy * y)) * y, sums by a GEMV instead of MindSpore's ReduceSum,
    which is slow on CPU (bench/NOTES.md)."""

    def bprop(self, x, out, dout):
        n = x.shape[-1]
        dot = ops.reshape(_row_sum(ops.reshape(dout * out, (-1, n))), x.shape[:-1] + (1,))
        return ((dout - dot) * out,)


def softmax_cell() -> Softmax:
    """The attention softmax (fp32, last axis): ``RowSoftmax`` on CPU, MindSpore's kernels elsewhere."""
    return RowSoftmax() if _on_cpu() else Softmax()


class Dense(nn.Dense):
    """``nn.Dense`` (same parameters, same arithmetic) that AMP bf16 puts on one fused kernel call: the bf16 GEMM
    with the bias added in its pass, and at inference a following GELU too (``fuse_activation``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bf16 = False  # graph constants: set before the first call
        self.fused_activation = ""

    def use_bf16(self) -> bool:
        """Put this layer on the bf16 kernel (the fused call where it has a bias and no activation of its own, else
        the plain bf16 GEMM); False when it already is."""
        from ms_vit.kernels.bf16 import bf16_dense_op, bf16_matmul_op

        if isinstance(self.matmul, ops.Custom):
            return False
        self.matmul = bf16_matmul_op(False, True)
        self.bf16_dense = bf16_dense_op("")
        self.bf16 = self.has_bias and not self.activation_flag
        return True

    def fuse_activation(self, activation: str):
        """Apply ``activation`` ("gelu_tanh" or "gelu_erf") inside the bf16 GEMM when not training; the caller
        then skips its own activation at inference."""
        from ms_vit.kernels.bf16 import bf16_dense_op

        self.bf16_dense_activation = bf16_dense_op(activation)
        self.fused_activation = activation

    def construct(self, x):
        if self.bf16:  # constants: graph mode compiles one branch
            if self.fused_activation and not self.training:
                return self.bf16_dense_activation(x, self.weight, self.bias)
            return self.bf16_dense(x, self.weight, self.bias)
        return super().construct(x)


def dense_layer(in_features: int, out_features: int) -> nn.Dense:
    return Dense(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init=Zero())


class _Normalize(nn.Cell):
    """LayerNorm over the last axis, without parameters of its own: (x, gamma, beta) -> (y, mean, variance)."""

    def __init__(self, epsilon: float, layer_norm=None):
        super().__init__()
        self.epsilon = epsilon
        self.layer_norm = ops.LayerNorm(-1, -1, epsilon=epsilon) if layer_norm is None else layer_norm

    def construct(self, x, gamma, beta):
        return self.layer_norm(x, gamma, beta)


class _RowNormalize(_Normalize):
    """The same LayerNorm with its backward written out from the forward's mean and variance, every mean and sum a
    GEMV, within 4e-5 of MindSpore's CPU LayerNormGrad and faster than it (bench/NOTES.md)."""

    def bprop(self, x, gamma, beta, out, dout):
        c = x.shape[-1]
        x2, dy = ops.reshape(x, (-1, c)), ops.reshape(dout[0], (-1, c))
        rstd = ops.rsqrt(ops.reshape(out[2], (-1, 1)) + self.epsilon)
        xhat = (x2 - ops.reshape(out[1], (-1, 1))) * rstd
        g = dy * gamma
        dx = rstd * (g - _row_sum(g, 1.0 / c) - xhat * _row_sum(g * xhat, 1.0 / c))
        ones = ops.ones((1, x2.shape[0]), x.dtype)
        return (ops.reshape(dx, x.shape), ops.reshape(ops.matmul(ones, dy * xhat), gamma.shape),
                ops.reshape(ops.matmul(ones, dy), beta.shape))


class _KernelLayerNorm(nn.Cell):
    """The C++ forward of ``ms_vit/kernels/layer_norm.cpp`` with ``ops.LayerNorm``'s call: (x, gamma, beta) -> (y,
    mean, variance); the aot op takes epsilon as a tensor input, held here."""

    def __init__(self, forward, epsilon: float):
        super().__init__()
        self.forward = forward
        self.epsilon = ms.Tensor([epsilon], ms.float32)

    def construct(self, x, gamma, beta):
        return self.forward(x, gamma, beta, self.epsilon)


class _KernelNormalize(_RowNormalize):
    """The CPU LayerNorm on the C++ kernels: forward and backward each one pass over a row kept in cache, where
    MindSpore's CPU LayerNorm and the elementwise ops of ``_RowNormalize``'s backward take a pass per operation.

    A ``_RowNormalize`` (the CPU path, written-out backward) whose forward and bprop are the kernel's; the forward
    stays ``_Normalize.construct``, calling the kernel in place of ``ops.LayerNorm``. Inputs are fp32
    (``LayerNorm.construct`` casts).
    """

    def __init__(self, epsilon: float, ops_pair):
        forward, grad = ops_pair
        super().__init__(epsilon, _KernelLayerNorm(forward, epsilon))
        self.grad = grad

    def bprop(self, x, gamma, beta, out, dout):
        # Only y's gradient flows: LayerNorm uses the mean and variance of the forward for nothing but backward.
        dx, dgamma, dbeta = self.grad(x, dout[0], gamma, out[1], out[2], self.layer_norm.epsilon)
        return dx, dgamma, dbeta


def _cpu_normalize(epsilon: float) -> _RowNormalize:
    """``_KernelNormalize`` where its kernel builds, else ``_RowNormalize`` (MindSpore's forward, GEMV backward)."""
    from ms_vit.kernels.layer_norm import layer_norm_ops

    pair = layer_norm_ops()
    return _RowNormalize(epsilon) if pair is None else _KernelNormalize(epsilon, pair)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (same parameters, same epsilon default) that always normalises in fp32;
    ``impl`` "auto" on CPU takes the C++ forward and backward of ``_KernelNormalize`` (``_RowNormalize`` where the
    kernel cannot be built), "gemv" the faster backward of ``_RowNormalize``, "kernel" MindSpore's.

    Under AMP O2 the activations are fp16; a fp16 variance over 768 channels overflows or loses the small
    differences that matter, a known source of NaN in ViTs, so the statistics are computed in fp32.
    """

    def __init__(self, normalized_shape, epsilon: float = 1e-7, impl: str = "auto", **kwargs):
        super().__init__(normalized_shape, epsilon=epsilon, **kwargs)
        if impl == "auto" and _on_cpu():
            self.normalize = _cpu_normalize(epsilon)
        else:
            self.normalize = (_RowNormalize if impl == "gemv" else _Normalize)(epsilon)

    def construct(self, x):
        y = self.normalize(x.astype(ms.float32), self.gamma.astype(ms.float32), self.beta.astype(ms.float32))[0]
        return y.astype(x.dtype)


class SigmoidGELU(nn.Cell):
    """The tanh-approximation GELU, 0.5 x (1 + tanh(c (x + 0.044715 x^3))), written as x * sigmoid(2c x (1 + 0.044715 x^2))
    (tanh(z) = 2 sigmoid(2z) - 1): on CPU much faster than MindSpore's GELU kernel (bench/NOTES.md) and within 1e-6
    of it (MindSpore's CPU tanh is 1e-4 off; its sigmoid is not)."""

    def __init__(self):
        super().__init__()
        # sigmoid(x (a + b x^2)): one elementwise pass fewer than sigmoid(2c x (1 + 0.044715 x^2)).
        self.a = 2.0 * math.sqrt(2.0 / math.pi)
        self.b = self.a * 0.044715

    def construct(self, x):
        return x * ops.sigmoid(x * (self.a + self.b * (x * x)))

    def bprop(self, x, out, dout):
        # Recompute from x instead of keeping the forward's four intermediates of (B, T, mlp_dim) for backward:
        # d/dx [x s(z)] = s (1 + x (1 - s) z'), z = x (a + b x^2), z' = a + 3 b x^2.
        x2 = x * x
        s = ops.sigmoid(x * (self.a + self.b * x2))
        return (dout * (s * (1.0 + x * (1.0 - s) * (self.a + 3.0 * self.b * x2))),)


class ErfGELU(nn.Cell):
    """The exact GELU, x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2, on the C++ kernel of
    ``ms_vit/kernels/gelu_erf.cpp``: MindSpore's CPU erf is slow, and its GELU keeps intermediates for backward.

    The backward recomputes from x in one pass, dout (Phi + x phi), instead of keeping (B, T, mlp_dim)
    intermediates, as ``SigmoidGELU`` does. Inputs other than fp32 (AMP's fp16) go through fp32.
    """

    def __init__(self, ops_pair):
        super().__init__()
        self.forward, self.grad = ops_pair

    def construct(self, x):
        return self.forward(x.astype(ms.float32)).astype(x.dtype)

    def bprop(self, x, out, dout):
        return (self.grad(x.astype(ms.float32), dout.astype(ms.float32)).astype(x.dtype),)


class TanhGELU(SigmoidGELU):
    """``SigmoidGELU``'s function and gradient on the C++ kernel (``gelu_tanh_ops``): one pass over memory each,
    where MindSpore's elementwise ops take one pass per operation. Inputs other than fp32 go through fp32."""

    def __init__(self, ops_pair):
        super().__init__()
        self.forward, self.grad = ops_pair

    construct = ErfGELU.construct  # the same calls of the (forward, gradient) pair
    bprop = ErfGELU.bprop


def gelu_cell(form: str, impl: str) -> nn.Cell:
    """The GELU of ``form`` ("tanh" or "erf"); ``impl`` "auto" takes the elementwise forms on CPU: ``TanhGELU`` for
    tanh and ``ErfGELU`` for erf where their kernel builds (else ``SigmoidGELU``, and MindSpore's kernel for erf:
    neither needs a compiler)."""
    if impl == "auto":
        impl = "elementwise" if ms.get_context("device_target") == "CPU" else "kernel"
    if form == "tanh" and impl == "elementwise":
        from ms_vit.kernels.gelu import gelu_tanh_ops

        pair = gelu_tanh_ops()
        return SigmoidGELU() if pair is None else TanhGELU(pair)
    if form == "erf" and impl == "elementwise":
        from ms_vit.kernels.gelu import gelu_erf_ops

        pair = gelu_erf_ops()
        if pair is not None:
            return ErfGELU(pair)
    return nn.GELU(approximate=form == "tanh")


def use_portable_ops(net) -> None:
    """Put MindSpore's own ops back where the model runs ms_vit's compiled kernels (``ErfGELU``, ``TanhGELU``, the
    C++ LayerNorm): an exported graph must load where the kernels' .so files do not exist, MindSpore cannot load a
    MindIR holding them, and its exporters cannot infer their shapes. fp16 AMP (O2, O3) needs the same: its casts
    reach the kernels' inputs, which take fp32 only."""
    for _, cell in list(net.cells_and_names()):
        if isinstance(cell, LayerNorm) and isinstance(cell.normalize, _KernelNormalize):
            cell.normalize = _RowNormalize(cell.normalize.epsilon)
        for name, child in list(cell.name_cells().items()):
            if isinstance(child, ErfGELU):
                setattr(cell, name, nn.GELU(approximate=False))
            elif isinstance(child, TanhGELU):
                setattr(cell, name, SigmoidGELU())
