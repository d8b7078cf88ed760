"""One optimizer step as a Cell: loss scaling, overflow skip, gradient clipping, gradient averaging."""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ms_vit.checkpoint.save import TRANSIENT_PREFIX  # the accumulation buffers: never saved, never loaded

_sq_sum = ops.MultitypeFuncGraph("sq_sum")


@_sq_sum.register("Tensor")
def _square_sum(grad):
    return ops.reduce_sum(ops.square(grad.astype(ms.float32)))


_scale = ops.MultitypeFuncGraph("scale")
_accumulate = ops.MultitypeFuncGraph("accumulate")
_clear = ops.MultitypeFuncGraph("clear")

@_accumulate.register("Tensor", "Tensor")
def _accumulate_grad(buffer, grad):
    return ops.assign_add(buffer, grad.astype(buffer.dtype))


@_clear.register("Tensor", "Tensor")
def _clear_buffer(token, buffer):
    return ops.assign(buffer, ops.depend(ops.zeros_like(buffer), token))


@_scale.register("Tensor", "Tensor")
def _scale_grad(factor, grad):
    return grad * factor.astype(grad.dtype)


def _cpu_sum_squares():
    """On CPU, the compiled sum-of-squares op for the gradient norm (MindSpore's ReduceSum over a whole tensor
    took longer than the rest of the update); None elsewhere or without a compiler."""
    if ms.get_context("device_target") != "CPU":
        return None
    from ms_vit.kernels.reduce import sum_squares_op

    return sum_squares_op()


class TrainStep(nn.TrainOneStepCell):
    """Forward, backward and update of ``net_with_loss``; returns (loss, overflow, loss scale).

    MindSpore's TrainOneStepWithLossScaleCell reads the overflow flag with NPU-only ops, which CPU lacks; here the
    flag is "the global gradient norm is not finite", which every device computes and clipping needs anyway. A step
    whose gradients overflow is skipped (and, with a dynamic scale, the scale is lowered). In data-parallel runs the
    gradients are averaged across processes before the norm, so every process takes the same decision.

    With ``accum_steps`` k > 1 each call is one micro-batch: its gradients are added to buffers, and every k-th call
    applies their mean (clipping and the overflow check see the mean), so k micro-batches of b images give the
    update of one batch of k*b images in the memory of b. Calls in between return overflow False and leave the
    weights and the optimizer alone. In data-parallel runs the gradients cross processes once per update, as the
    accumulated sum, not once per micro-batch.

    Args:
        net_with_loss: a Cell returning the loss.
        optimizer: a MindSpore optimizer over the network's parameters.
        scale_update_cell: ``nn.DynamicLossScaleUpdateCell`` for dynamic loss scaling (AMP O2), or None.
        fixed_scale: a constant loss scale when no update cell is given (1.0: none).
        clip_norm: clip gradients to this global L2 norm (0: off).
        accum_steps: micro-batches per optimizer update (1: every call updates).
        ema: an ``ms_vit.train.ema.EMA`` of the trained weights, updated after every applied update (None: off).
    """

    def __init__(self, net_with_loss, optimizer, scale_update_cell=None, fixed_scale: float = 1.0,
                 clip_norm: float = 0.0, accum_steps: int = 1, ema=None):
        super().__init__(net_with_loss, optimizer, sens=1.0)
        self.ema = ema
        self.clip_norm = float(clip_norm)
        self.accum_steps = int(accum_steps)
        if self.accum_steps > 1:
            self.accum_grads = self.weights.clone(prefix=TRANSIENT_PREFIX, init="zeros")
            self.accum_count = Parameter(Tensor(0, ms.int32), name=f"{TRANSIENT_PREFIX}_count", requires_grad=False)
            self.no_overflow = Tensor(False, ms.bool_)
        self.dynamic = scale_update_cell is not None
        self.scale_update = scale_update_cell
        initial = scale_update_cell.get_loss_scale() if self.dynamic else fixed_scale
        self.scale_sense = Parameter(Tensor(initial, ms.float32), name="scale_sense", requires_grad=False)
        self.hyper_map = ops.HyperMap()
        self.sum_squares = _cpu_sum_squares()

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.scale_sense.value()
        sens = ops.ones_like(loss) * scale.astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        if self.accum_steps == 1:
            return self._update(loss, self.grad_reducer(grads), scale)
        # Each process sums its own micro-batches; the sums are averaged across processes once per update (the
        # reduction is linear, so this is the same mean at 1/accum_steps of the communication).
        grads = self.hyper_map(_accumulate, self.accum_grads, grads)
        count = self.accum_count + 1
        if count < self.accum_steps:
            ops.assign(self.accum_count, count)
            return loss, self.no_overflow, scale
        ops.assign(self.accum_count, 0)
        loss, overflow, scale = self._update(loss, self.grad_reducer(grads), scale)
        loss = ops.depend(loss, self.hyper_map(ops.partial(_clear, loss), self.accum_grads))
        return loss, overflow, scale

    def _update(self, loss, grads, scale):
        """Unscale (and average the accumulated micro-batches), check, clip and apply ``grads``."""
        grads = self.hyper_map(ops.partial(_scale, 1.0 / (scale * self.accum_steps)), grads)
        if self.sum_squares is None:  # a constant
            norm = ops.sqrt(ops.addn(self.hyper_map(_sq_sum, grads)))
        else:
            norm = ops.sqrt(ops.reshape(ops.addn([self.sum_squares(g.astype(ms.float32)) for g in grads]), ()))
        overflow = ops.logical_not(ops.isfinite(norm))
        if self.dynamic:
            overflow = self.scale_update(self.scale_sense, overflow)
        if self.clip_norm > 0:
            factor = ops.minimum(self.clip_norm / (norm + 1e-6), 1.0)
            grads = self.hyper_map(ops.partial(_scale, factor), grads)
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.ema is not None:  # a constant: without EMA the graph has no such branch
                loss = ops.depend(loss, self.ema())
        return loss, overflow, scale
