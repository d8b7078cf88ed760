"""Mixed precision per device: O2 with dynamic loss scaling on Ascend and GPU; on CPU bf16 GEMMs where the CPU has
bf16 instructions (avx512_bf16, amx_bf16) and the kernel builds, else O0."""

from __future__ import annotations

# MindSpore's own default for DynamicLossScaleManager: start at 2**24, halve on overflow, double after 1000 steps.
DYNAMIC_SCALE = (2.0 ** 24, 2.0, 1000)
# The CPU level: the Dense layers, the patch embedding and the attention's batched matmuls run in bf16 with fp32
# accumulation (ms_vit.kernels); weights, LayerNorm, softmax, the loss and the optimizer stay fp32. bf16 has fp32's
# range, so no loss scaling.
BF16 = "bf16"


def resolve_amp_level(amp_level: str, device_target: str, log=None, gate=None) -> str:
    """"auto" becomes O2 on Ascend and GPU (with dynamic loss scaling); on CPU, bf16 where ``gate`` (default
    ``ms_vit.kernels.bf16_status``) says the CPU has bf16 instructions and the kernel builds, else O0 (fp16 is
    slower than fp32 on CPU, and MindSpore refuses dynamic loss scaling there). ``log`` gets the choice and why."""
    from ms_vit.kernels import choose_bf16

    log = log or (lambda *a, **k: None)
    if amp_level == BF16:
        _, why = choose_bf16(BF16, device_target, "amp_level", "use O2 (or auto) there", "or use amp_level O0", gate)
        log(f"AMP bf16: {why}")
        return BF16
    if amp_level != "auto":
        return amp_level
    if device_target != "CPU":
        return "O2"
    take, why = choose_bf16("auto", device_target, "amp_level", "", "", gate)
    log(f"AMP auto on CPU: {'bf16' if take else 'O0 (fp32)'} ({why})")
    return BF16 if take else "O0"


def apply_amp(net, amp_level: str):
    """Cast ``net`` for the AMP level in place. LayerNorm and softmax stay fp32 inside the model's own code; under
    bf16 the GEMMs held as cell attributes (MatMul, BatchMatMul) go onto the bf16 kernel."""
    if amp_level == BF16:
        from ms_vit.kernels import use_bf16_matmuls

        use_bf16_matmuls(net)
    elif amp_level != "O0":
        import mindspore as ms

        from ms_vit.models.layers import use_portable_ops

        use_portable_ops(net)  # the compiled CPU kernels take fp32 only; fp16 AMP casts their inputs
        ms.amp.auto_mixed_precision(net, amp_level)
    return net


def loss_scale_cell(amp_level: str, fixed_scale: float):
    """A DynamicLossScaleUpdateCell under fp16 AMP unless a fixed scale is asked for; None means a fixed scale."""
    if amp_level in ("O0", BF16) or fixed_scale > 0:
        return None
    from mindspore import nn

    value, factor, window = DYNAMIC_SCALE
    return nn.DynamicLossScaleUpdateCell(loss_scale_value=value, scale_factor=factor, scale_window=window)
