"""One optimizer step as a Cell: loss scaling, overflow skip, gradient clipping, gradient averaging."""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

_sq_sum = ops.MultitypeFuncGraph("sq_sum")


@_sq_sum.register("Tensor")
def _square_sum(grad):
    return ops.reduce_sum(ops.square(grad.astype(ms.float32)))


_scale = ops.MultitypeFuncGraph("scale")


@_scale.register("Tensor", "Tensor")
def _scale_grad(factor, grad):
    return grad * factor.astype(grad.dtype)


class TrainStep(nn.TrainOneStepCell):
    """Forward, backward and update of ``net_with_loss``; returns (loss, overflow, loss scale).

    MindSpore's TrainOneStepWithLossScaleCell reads the overflow flag with NPU-only ops, which CPU lacks; here the
    flag is "the global gradient norm is not finite", which every device computes and clipping needs anyway. A step
    whose gradients overflow is skipped (and, with a dynamic scale, the scale is lowered). In data-parallel runs the
    gradients are averaged across processes before the norm, so every process takes the same decision.

    Args:
        net_with_loss: a Cell returning the loss.
        optimizer: a MindSpore optimizer over the network's parameters.
        scale_update_cell: ``nn.DynamicLossScaleUpdateCell`` for dynamic loss scaling (AMP O2), or None.
        fixed_scale: a constant loss scale when no update cell is given (1.0: none).
        clip_norm: clip gradients to this global L2 norm (0: off).
    """

    def __init__(self, net_with_loss, optimizer, scale_update_cell=None, fixed_scale: float = 1.0,
                 clip_norm: float = 0.0):
        super().__init__(net_with_loss, optimizer, sens=1.0)
        self.clip_norm = float(clip_norm)
        self.dynamic = scale_update_cell is not None
        self.scale_update = scale_update_cell
        initial = scale_update_cell.get_loss_scale() if self.dynamic else fixed_scale
        self.scale_sense = Parameter(Tensor(initial, ms.float32), name="scale_sense", requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.scale_sense.value()
        sens = ops.ones_like(loss) * scale.astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        grads = self.hyper_map(ops.partial(_scale, 1.0 / scale), grads)
        norm = ops.sqrt(ops.addn(self.hyper_map(_sq_sum, grads)))
        overflow = ops.logical_not(ops.isfinite(norm))
        if self.dynamic:
            overflow = self.scale_update(self.scale_sense, overflow)
        if self.clip_norm > 0:
            factor = ops.minimum(self.clip_norm / (norm + 1e-6), 1.0)
            grads = self.hyper_map(ops.partial(_scale, factor), grads)
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, overflow, scale
