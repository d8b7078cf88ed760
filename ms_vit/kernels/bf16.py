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


def use_bf16_matmuls(net) -> int:
    """Put every MatMul and BatchMatMul primitive held as a cell attribute in ``net`` (nn.Dense's ``matmul``, the
    attention's ``scores``, ...) on the bf16 kernel with the same transposes, in place; the number replaced.

    Functional calls (``ops.matmul(...)`` inside a construct) are left alone: the model keeps its fp32 GEMVs
    (LayerNorm's and softmax's backward sums) that way, and a GEMM that should go bf16 is held as an attribute."""
    replaced = 0
    for _, cell in net.cells_and_names():
        for name, value in list(vars(cell).items()):
            if isinstance(value, (ops.MatMul, ops.BatchMatMul)) and not isinstance(value, ops.Custom):
                setattr(cell, name, bf16_matmul_op(bool(value.transpose_a), bool(value.transpose_b)))
                replaced += 1
    return replaced
