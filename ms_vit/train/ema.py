"""An exponential moving average of the trained weights (timm's ModelEmaV2 idea), updated inside the training step.

The shadow copies are Parameters named ``ema.<name>``: they are saved in every training checkpoint and restored on
resume with the rest of the training state. ``swapped_in`` puts them into the network for a validation pass and then
restores the trained weights.
"""

from __future__ import annotations

from contextlib import contextmanager

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

EMA_PREFIX = "ema"
_update = ops.MultitypeFuncGraph("ema_update")


@_update.register("Tensor", "Tensor", "Tensor")
def _update_one(decay, shadow, weight):
    return ops.assign(shadow, shadow * decay + weight.astype(shadow.dtype) * (1.0 - decay))


class EMA(nn.Cell):
    """Shadow weights ``ema = d * ema + (1 - d) * w`` after every optimizer step.

    With ``warmup`` the decay of update n is ``min(decay, (1 + n) / (10 + n))``, so the early average is not
    dominated by the pretrained starting point (the warm-up of mindcv's and TensorFlow's EMA).
    """

    def __init__(self, params, decay: float, warmup: bool = True):
        super().__init__(auto_prefix=False)  # the shadows keep their own names, ema.<parameter name>
        self.weights = ParameterTuple(params)
        self.shadow = self.weights.clone(prefix=EMA_PREFIX, init="same")
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = Parameter(Tensor(0.0, ms.float32), name=f"{EMA_PREFIX}.updates", requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        n = self.updates + 1.0
        decay = ops.minimum((1.0 + n) / (10.0 + n), self.decay) if self.warmup else n * 0.0 + self.decay
        ops.assign(self.updates, n)
        return self.hyper_map(ops.partial(_update, decay), self.shadow, self.weights)

    @contextmanager
    def swapped_in(self):
        """Within the block the network holds the EMA weights; afterwards its own again."""
        kept = [w.asnumpy().copy() for w in self.weights]
        for weight, shadow in zip(self.weights, self.shadow):
            weight.set_data(Tensor(shadow.asnumpy()).astype(weight.dtype))
        try:
            yield
        finally:
            for weight, value in zip(self.weights, kept):
                weight.set_data(Tensor(value))
