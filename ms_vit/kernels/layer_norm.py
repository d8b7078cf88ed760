"""LayerNorm over the last axis as MindSpore aot ops over ``layer_norm.cpp``: forward (y, mean, variance) and
gradient (dx, dgamma, dbeta), one pass over a row's memory each, built with the machine's C++ compiler into the
kernel cache on first use.

``layer_norm_ops()`` gives (forward op, gradient op), or None when the kernel cannot be built (no compiler, a failed
compile, an unwritable cache): the model then keeps MindSpore's LayerNorm. Both ops take epsilon as their last
input, a float32 tensor of one element.
"""

from __future__ import annotations

import functools

from ms_vit.kernels.gate import compile_native


@functools.lru_cache(maxsize=None)
def build() -> tuple[str | None, str]:
    """(path of the compiled .so, "") or (None, the one-line reason it cannot be built)."""
    return compile_native("layer_norm")


def _forward_shape(x, *_):
    rows = list(x[:-1]) + [1]
    return [list(x), rows, list(rows)]


def _forward_dtype(x, *_):
    return [x, x, x]


def _grad_shape(x, dy, gamma, *_):
    return [list(x), list(gamma), list(gamma)]


def _grad_dtype(x, dy, gamma, *_):
    return [x, gamma, gamma]


@functools.lru_cache(maxsize=None)
def layer_norm_ops():
    """(forward, gradient) MindSpore primitives, float32: (x, gamma, beta, eps) -> (y, mean, variance) with the
    shapes of ``ops.LayerNorm(-1, -1, eps)``'s outputs, and (x, dy, gamma, mean, variance, eps) -> (dx, dgamma,
    dbeta); None when the kernel is unavailable."""
    path, _ = build()
    if path is None:
        return None
    from mindspore import ops

    forward = ops.Custom(f"{path}:ms_vit_layer_norm", out_shape=_forward_shape, out_dtype=_forward_dtype,
                         func_type="aot")
    grad = ops.Custom(f"{path}:ms_vit_layer_norm_grad", out_shape=_grad_shape, out_dtype=_grad_dtype,
                      func_type="aot")
    return forward, grad
