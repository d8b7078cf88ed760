"""The sum of squares of a tensor as a MindSpore aot op over ``reduce.cpp`` (the global gradient norm on CPU),
built with the machine's C++ compiler into the kernel cache on first use; None without one (MindSpore's ReduceSum
then)."""

from __future__ import annotations

import functools

from ms_vit.kernels.gate import compile_native


@functools.lru_cache(maxsize=None)
def build() -> tuple[str | None, str]:
    """(path of the compiled .so, "") or (None, the one-line reason); once per source, flags and CPU kind."""
    return compile_native("reduce")


@functools.lru_cache(maxsize=None)
def sum_squares_op():
    """x (float32, any shape) -> [sum of x^2] (shape [1], float32, summed in double); None when unavailable."""
    path, _ = build()
    if path is None:
        return None
    import mindspore as ms
    from mindspore import ops

    return ops.Custom(f"{path}:ms_vit_sum_squares", out_shape=lambda x: [1], out_dtype=lambda x: ms.float32,
                      func_type="aot")
