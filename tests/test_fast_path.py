"""The CPU fast path (MatMul patch embedding, elementwise GELU) changes no result."""

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of
from mindspore import nn

import ms_vit
from ms_vit.model import SigmoidGELU, gelu_cell

PLAIN = {"patch_impl": "conv", "gelu_impl": "kernel"}
FAST = {"patch_impl": "matmul", "gelu_impl": "auto"}


def pair(gelu, **extra):
    ms.set_seed(0)
    plain = ms_vit.create_model(TINY, gelu=gelu, **PLAIN, **extra)
    fast = ms_vit.create_model(TINY, gelu=gelu, **FAST, **extra)
    ms.load_param_into_net(fast, {p.name: ms.Parameter(ms.Tensor(p.asnumpy()), name=p.name)
                                  for p in plain.get_parameters()}, strict_load=True)
    return plain, fast


def test_auto_takes_the_elementwise_tanh_gelu_on_cpu():
    assert isinstance(gelu_cell("tanh", "auto"), SigmoidGELU)
    assert isinstance(gelu_cell("tanh", "kernel"), nn.GELU) and isinstance(gelu_cell("erf", "auto"), nn.GELU)


def test_elementwise_gelu_equals_the_kernel():
    x = ms.Tensor(np.linspace(-12, 12, 20001, dtype=np.float32))
    np.testing.assert_allclose(SigmoidGELU()(x).asnumpy(), nn.GELU(approximate=True)(x).asnumpy(), atol=2e-6)


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_logits_within_1e5_of_the_plain_path(gelu, images):
    plain, fast = pair(gelu)
    x = images(4) * 3
    np.testing.assert_allclose(logits_of(fast, x), logits_of(plain, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_training_losses_equal_to_5_digits_over_20_steps(gelu, images):
    from ms_vit.config import make_train_config
    from ms_vit.train import build_train_cell

    cfg = make_train_config({"model": TINY, "optimizer": "adamw", "lr": 1e-3, "epochs": 1, "weight_decay": 0.05})
    x = ms.Tensor(images(8, seed=3) * 2)
    y = ms.Tensor(np.arange(8, dtype=np.int32) % 10)
    losses = []
    for net in pair(gelu):
        cell, _ = build_train_cell(net, cfg, 10, steps_per_epoch=20, amp_level="O0")
        cell.set_train(True)
        losses.append([float(cell(x, y)[0].asnumpy()) for _ in range(20)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert losses[0][-1] < losses[0][0]  # it trained


def test_elementwise_gelu_gradient_equals_the_kernels():
    x = ms.Tensor(np.linspace(-8, 8, 4001, dtype=np.float32))
    fast = ms.grad(SigmoidGELU())(x).asnumpy()
    kernel = ms.grad(nn.GELU(approximate=True))(x).asnumpy()
    np.testing.assert_allclose(fast, kernel, atol=5e-6)
