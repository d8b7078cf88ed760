"""The exact (erf) GELU as MindSpore aot ops over ``gelu_erf.cpp``: forward and gradient, one pass over memory
each, built with the machine's C++ compiler into the kernel cache on first use.

``gelu_erf_ops()`` gives (forward op, gradient op), or None when the kernel cannot be built (no compiler, a failed
compile, an unwritable cache): the model then keeps MindSpore's GELU kernel. Needs no oneDNN, unlike the bf16
kernel.
"""

from __future__ import annotations

import functools

from ms_vit.kernels.gate import compile_native


@functools.lru_cache(maxsize=None)
def build() -> tuple[str | None, str]:
    """(path of the compiled .so, "") or (None, the one-line reason it cannot be built); compiled once per source,
    flags, compiler and CPU flags (-march=native), into the same cache as the bf16 kernel."""
    return compile_native("gelu_erf")


def _same_shape(x, *_):
    return x


def _same_dtype(x, *_):
    return x


def _ops(name: str):
    path, _ = build()
    if path is None:
        return None
    from mindspore import ops

    forward = ops.Custom(f"{path}:ms_vit_{name}", out_shape=_same_shape, out_dtype=_same_dtype, func_type="aot")
    grad = ops.Custom(f"{path}:ms_vit_{name}_grad", out_shape=_same_shape, out_dtype=_same_dtype, func_type="aot")
    return forward, grad


@functools.lru_cache(maxsize=None)
def gelu_erf_ops():
    """(forward, gradient) MindSpore primitives: x -> x Phi(x) and (x, dy) -> dy (Phi(x) + x phi(x)), float32;
    None when the kernel is unavailable."""
    return _ops("gelu_erf")


@functools.lru_cache(maxsize=None)
def gelu_tanh_ops():
    """(forward, gradient) of the tanh form, x s(x (a + b x^2)) (``SigmoidGELU``'s function), float32, one pass
    each; None when the kernel is unavailable."""
    return _ops("gelu_tanh")
