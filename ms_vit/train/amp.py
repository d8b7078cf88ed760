"""Mixed precision per device: O2 with dynamic loss scaling on Ascend and GPU, O0 on CPU."""

from __future__ import annotations

# MindSpore's own default for DynamicLossScaleManager: start at 2**24, halve on overflow, double after 1000 steps.
DYNAMIC_SCALE = (2.0 ** 24, 2.0, 1000)


def resolve_amp_level(amp_level: str, device_target: str) -> str:
    """"auto" becomes O2 on Ascend and GPU and O0 on CPU (fp16 is slower than fp32 on CPU, and MindSpore refuses
    dynamic loss scaling there)."""
    if amp_level != "auto":
        return amp_level
    return "O0" if device_target == "CPU" else "O2"


def apply_amp(net, amp_level: str):
    """Cast ``net`` for the AMP level in place. LayerNorm and softmax stay fp32 inside the model's own code."""
    if amp_level != "O0":
        import mindspore as ms

        ms.amp.auto_mixed_precision(net, amp_level)
    return net


def loss_scale_cell(amp_level: str, fixed_scale: float):
    """A DynamicLossScaleUpdateCell under fp16 AMP unless a fixed scale is asked for; None means a fixed scale."""
    if amp_level == "O0" or fixed_scale > 0:
        return None
    from mindspore import nn

    value, factor, window = DYNAMIC_SCALE
    return nn.DynamicLossScaleUpdateCell(loss_scale_value=value, scale_factor=factor, scale_window=window)
