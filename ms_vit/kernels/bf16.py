"""bf16 matmuls as MindSpore primitives (``ops.Custom`` aot ops over ``bf16_matmul.cpp``), with both gradients, and
the switch that puts a network's GEMMs on them.

The operands are rounded to bf16 and multiplied with fp32 accumulation into an fp32 result; parameters, gradients
and every other op (LayerNorm, softmax, the loss, the optimizer) stay fp32. The gradients are bf16 GEMMs of the
same kind: for C = A @ B, dA = dC @ B^T and dB = A^T @ dC, each transpose taken by the kernel, not copied.
"""

from __future__ import annotations

import functools

import mindspore as ms
from mindspore import ops

from ms_vit.kernels.gate import build

KINDS = ("nn", "nt", "tn", "tt")


def _kind(transpose_a: bool, transpose_b: bool) -> str:
    return ("t" if transpose_a else "n") + ("t" if transpose_b else "n")


def _out_shape(kind: str):
    def shape(a, b):
        if len(a) < 2 or len(a) > 4 or len(b) not in (2, len(a)):
            raise ValueError(f"bf16 matmul takes 2- to 4-D operands of equal rank or a 2-D second one, "
                             f"got shapes {tuple(a)} and {tuple(b)}")
        m, k = (a[-1], a[-2]) if kind[0] == "t" else (a[-2], a[-1])
        kb, n = (b[-1], b[-2]) if kind[1] == "t" else (b[-2], b[-1])
        if k != kb and k >= 0 and kb >= 0:
            raise ValueError(f"bf16 matmul ({kind}): inner dimensions {k} and {kb} differ, shapes {tuple(a)} and "
                             f"{tuple(b)}")
        return list(a[:-2]) + [m, n]
    return shape


def _float32(*_):
    return ms.float32


def _kernel_path() -> str:
    path, reason = build()
    if path is None:
        from ms_vit.errors import MsVitError

        raise MsVitError(f"the bf16 kernel is unavailable: {reason}")
    return path


@functools.lru_cache(maxsize=None)
def _plain_op(kind: str):
    """The kernel without a gradient of its own: the gradient GEMMs (second derivatives are not needed)."""
    return ops.Custom(f"{_kernel_path()}:ms_vit_bf16_matmul_{kind}", out_shape=_out_shape(kind), out_dtype=_float32,
                      func_type="aot")


def _flat(x):
    return ops.reshape(x, (-1, x.shape[-1]))


def _bprop(kind: str):
    nn_, nt, tn, tt = (_plain_op(k) for k in KINDS)

    if kind == "nn":
        def bprop(a, b, out, dout):
            if len(b.shape) == 2 and len(a.shape) > 2:  # one weight for every batch: its gradient sums over them
                return nt(dout, b), tn(_flat(a), _flat(dout))
            return nt(dout, b), tn(a, dout)
    elif kind == "nt":
        def bprop(a, b, out, dout):
            if len(b.shape) == 2 and len(a.shape) > 2:
                return nn_(dout, b), tn(_flat(dout), _flat(a))
            return nn_(dout, b), tn(dout, a)
    elif kind == "tn":
        def bprop(a, b, out, dout):
            return nt(b, dout), nn_(a, dout)
    else:
        def bprop(a, b, out, dout):
            return tt(b, dout), tt(dout, a)
    return bprop


@functools.lru_cache(maxsize=None)
def bf16_matmul_op(transpose_a: bool = False, transpose_b: bool = False):
    """The primitive: (A, B) -> op(A) @ op(B) in bf16 with fp32 accumulation, fp32 out, differentiable in both.

    A is 2- to 4-D; B has A's rank (same batch dims) or is 2-D (one matrix for all, as a Dense weight; then A must
    not be transposed). Built on first use (the compile happens once per machine); raises ``MsVitError`` with the
    reason when the kernel cannot be built."""
    kind = _kind(transpose_a, transpose_b)
    if transpose_a:
        # A transposed per batch cannot be flattened to one GEMM for the shared weight's gradient.
        base = _out_shape(kind)

        def shape(a, b):
            if len(b) == 2 and len(a) > 2:
                raise ValueError("bf16 matmul: a transposed batched first operand needs a batched second operand")
            return base(a, b)
    else:
        shape = _out_shape(kind)
    return ops.Custom(f"{_kernel_path()}:ms_vit_bf16_matmul_{kind}", out_shape=shape, out_dtype=_float32,
                      func_type="aot", bprop=_bprop(kind))


DENSE_ACTIVATIONS = ("", "gelu_tanh", "gelu_erf")


def _dense_shape(x, w, b):
    if len(w) != 2 or len(b) != 1 or (x[-1] >= 0 and w[1] >= 0 and x[-1] != w[1]):
        raise ValueError(f"bf16 dense takes x [..., K], weight [N, K] and bias [N], got shapes {tuple(x)}, "
                         f"{tuple(w)} and {tuple(b)}")
    return list(x[:-1]) + [w[0]]


def _dense_bprop():
    nn_, tn = _plain_op("nn"), _plain_op("tn")
    # The rows' sum of dy in the kernel: MindSpore's CPU ReduceSum over the first axis took longer than the GEMMs'
    # conversions of the same tensor.
    bias_grad = ops.Custom(f"{_kernel_path()}:ms_vit_bias_grad", out_shape=lambda dy: [dy[-1]], out_dtype=_float32,
                           func_type="aot")

    def bprop(x, w, b, out, dout):
        return nn_(dout, w), tn(_flat(dout), _flat(x)), bias_grad(dout)
    return bprop


@functools.lru_cache(maxsize=None)
def bf16_dense_op(activation: str = ""):
    """The primitive of a Dense layer on the bf16 kernel: (x [..., K], weight [N, K], bias [N]) -> x W^T + b, the
    bias added in the GEMM's own pass (fp32), then ``activation`` ("gelu_tanh" or "gelu_erf": oneDNN's GELU in the
    same pass, for inference only: it has no gradient). Without an activation it is differentiable in all three."""
    if activation not in DENSE_ACTIVATIONS:
        raise ValueError(f"bf16 dense: activation {activation!r} is not one of {DENSE_ACTIVATIONS}")
    name = "ms_vit_bf16_dense" + (f"_{activation}" if activation else "")
    return ops.Custom(f"{_kernel_path()}:{name}", out_shape=_dense_shape, out_dtype=_float32, func_type="aot",
                      bprop=None if activation else _dense_bprop())


def _attention_shape(heads: int):
    def shape(qkv):
        if len(qkv) != 3 or (qkv[2] >= 0 and qkv[2] % (3 * heads)):
            raise ValueError(f"bf16 attention takes qkv [B, N, 3 x {heads} heads x D], got shape {tuple(qkv)}")
        return [qkv[0], qkv[1], qkv[2] // 3], [qkv[0], heads, qkv[1], qkv[1]]
    return shape


@functools.lru_cache(maxsize=None)
def bf16_attention_op(heads: int):
    """Self-attention in one kernel call: qkv [B, N, 3C] (q, k, v, each ``heads`` x D, as the fused qkv Dense
    writes them) -> (context [B, N, C] in the layout the output projection reads, probabilities [B, H, N, N]),
    with softmax(q k^T / sqrt(D)) v on bf16 GEMMs with fp32 accumulation, softmax in fp32. q, k and v are read
    through strides and the context written through strides: no head transposes. Differentiable (the gradient
    uses the kept probabilities)."""
    path = _kernel_path()
    grad = ops.Custom(f"{path}:ms_vit_bf16_attention_grad", out_shape=lambda qkv, *_: qkv, out_dtype=_float32,
                      func_type="aot")

    def bprop(qkv, out, dout):
        return (grad(qkv, out[1], dout[0], dout[1]),)

    return ops.Custom(f"{path}:ms_vit_bf16_attention", out_shape=_attention_shape(heads),
                      out_dtype=lambda *_: (ms.float32, ms.float32), func_type="aot", bprop=bprop)


def use_bf16_matmuls(net) -> int:
    """Put every MatMul and BatchMatMul primitive held as a cell attribute in ``net`` (nn.Dense's ``matmul``, the
    attention's ``scores``, ...) on the bf16 kernel with the same transposes, in place; the number replaced.
    ms_vit's own cells take the fused calls: Dense layers the dense kernel (bias in the GEMM's pass), a
    FeedForward's GELU joins its first Dense at inference, Attention runs as one call (``bf16_attention_op``).

    Functional calls (``ops.matmul(...)`` inside a construct) are left alone: the model keeps its fp32 GEMVs
    (LayerNorm's and softmax's backward sums) that way, and a GEMM that should go bf16 is held as an attribute."""
    replaced = 0
    for _, cell in net.cells_and_names():
        # ms_vit's own cells first: Dense (the bias joins the GEMM; True: its GEMM is done), FeedForward (the GELU
        # joins dense1 at inference), Attention (one fused call; its batched matmuls are swapped below too).
        hook = getattr(cell, "use_bf16", None)
        if hook is not None and hook():
            replaced += 1
            continue
        for name, value in list(vars(cell).items()):
            if isinstance(value, (ops.MatMul, ops.BatchMatMul)) and not isinstance(value, ops.Custom):
                setattr(cell, name, bf16_matmul_op(bool(value.transpose_a), bool(value.transpose_b)))
                replaced += 1
    return replaced
