"""Native kernels ms_vit compiles on the user's machine: the bf16 matmul for CPUs with bf16 instructions.

``bf16_status()`` is the gate (usable, one-line reason); ``bf16_matmul_op`` the MindSpore primitive;
``use_bf16_matmuls(net)`` puts a network's GEMMs on it. Importing this package compiles nothing, and the gate
does not import MindSpore (the benchmark's parent process asks it).
"""

from ms_vit.kernels.gate import bf16_status, build, choose_bf16, cpu_bf16, matmul_impl

__all__ = ["bf16_matmul_op", "bf16_status", "build", "choose_bf16", "cpu_bf16", "matmul_impl", "use_bf16_matmuls"]


def __getattr__(name):
    if name in ("bf16_matmul_op", "use_bf16_matmuls"):
        from ms_vit.kernels import bf16

        return getattr(bf16, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
