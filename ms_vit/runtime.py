"""Device and execution-mode set-up, in one place."""

from __future__ import annotations

from .errors import ConfigError

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
        try:
            ms.set_device(device_target)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"device {device_target} is not available in this MindSpore build ({err}); "
                              "use --device_target CPU or install MindSpore's build for that device") from err
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    return ms.get_context("device_target")
