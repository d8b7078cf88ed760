"""Device and execution-mode set-up, in one place."""

from __future__ import annotations

from ms_vit.errors import ConfigError

DEVICE_TARGETS = ("Ascend", "GPU", "CPU")
MODES = {"graph": 0, "pynative": 1}


def device_present(target: str) -> bool:
    """Whether this machine has the device's driver (MindSpore's wheel ships every plugin, so the wheel cannot tell)."""
    import ctypes
    import os

    if target == "CPU":
        return True
    if target == "GPU":
        try:
            ctypes.CDLL("libcuda.so.1")
            return True
        except OSError:
            return False
    return bool(os.environ.get("ASCEND_HOME_PATH")) or os.path.isdir("/usr/local/Ascend")


# MindSpore 2.10's PyPI wheel holds GPU plugins built for CUDA 11.1 and 11.6 (mindspore/lib/plugin/gpu11.*): they
# need CUDA 11's runtime, cuBLAS and cuDNN 8 beside the driver.
GPU_RUNTIME_LIBS = ("libcudart.so.11.0", "libcublas.so.11", "libcudnn.so.8")


def missing_gpu_runtime() -> list[str]:
    """The CUDA 11 libraries that MindSpore's GPU plugin needs and this machine cannot load (empty: all found)."""
    import ctypes

    missing = []
    for name in GPU_RUNTIME_LIBS:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def set_up(device_target: str | None = None, mode: str = "graph") -> str:
    """Select the device and execution mode; returns the device target in use.

    Args:
        device_target: "Ascend", "GPU" or "CPU"; None keeps what MindSpore found (its build's default device).
        mode: "graph" (compiled, the default) or "pynative".
    """
    import mindspore as ms

    if mode not in MODES:
        raise ConfigError(f"mode must be graph or pynative, got {mode!r}")
    if device_target is not None:
        if device_target not in DEVICE_TARGETS:
            raise ConfigError(f"device_target must be one of {', '.join(DEVICE_TARGETS)}, got {device_target!r}")
        if not device_present(device_target):
            raise ConfigError(f"device {device_target} is not present on this machine (no "
                              f"{'CUDA driver' if device_target == 'GPU' else 'Ascend toolkit'} found): "
                              "use --device_target CPU, or run on a machine with that device")
        missing = missing_gpu_runtime() if device_target == "GPU" else []
        if missing:
            raise ConfigError(f"device GPU: MindSpore {ms.__version__}'s GPU plugins are built for CUDA 11.1/11.6 and "
                              f"this machine cannot load {', '.join(missing)}: install CUDA 11.6 with cuDNN 8 (or "
                              "MindSpore's own GPU build for your CUDA), or use --device_target CPU")
        try:
            ms.set_device(device_target)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"device {device_target} is not available in this MindSpore build ({err}); "
                              "use --device_target CPU or install MindSpore's build for that device") from err
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    return ms.get_context("device_target")
