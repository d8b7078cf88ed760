"""The CPU fast path (MatMul patch embedding, elementwise GELU) changes no result."""

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of
from mindspore import nn

import ms_vit
from ms_vit.models.vit import SigmoidGELU, gelu_cell

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
    assert isinstance(gelu_cell("tanh", "kernel"), nn.GELU) and isinstance(gelu_cell("erf", "kernel"), nn.GELU)


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
    from ms_vit.train.run import build_train_cell

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


class WeightedSum(nn.Cell):
    def __init__(self, cell, w):
        super().__init__()
        self.cell, self.w = cell, w

    def construct(self, *xs):
        y = self.cell(*xs)
        return ((y[0] if isinstance(y, tuple) else y) * self.w).sum()


def _grads(cell, *inputs):
    """Gradients of sum(cell(*inputs) * w) for a fixed random w, with respect to every input."""
    out = cell(*inputs)
    shape = (out[0] if isinstance(out, tuple) else out).shape
    w = ms.Tensor(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    grads = ms.grad(WeightedSum(cell, w), grad_position=tuple(range(len(inputs))))(*inputs)
    return [g.asnumpy() for g in (grads if isinstance(grads, tuple) else (grads,))]


def test_cpu_takes_the_gemv_backward_of_layer_norm_and_attention_softmax():
    from ms_vit.models.layers import RowSoftmax, _RowNormalize

    from ms_vit.models.vit import Attention

    net = ms_vit.create_model(TINY)
    assert isinstance(net.norm.normalize, _RowNormalize)
    attentions = [cell for _, cell in net.cells_and_names() if isinstance(cell, Attention)]
    assert len(attentions) == net.config.num_layers == 2  # not an all() over nothing
    assert all(isinstance(attention.softmax, RowSoftmax) for attention in attentions)
    norms = [cell for _, cell in net.cells_and_names() if type(cell).__name__ == "LayerNorm"]
    assert len(norms) == 2 * 2 + 1 and all(isinstance(norm.normalize, _RowNormalize) for norm in norms)


def test_gemv_backward_of_layer_norm_equals_the_kernels():
    from ms_vit.models.layers import _Normalize, _RowNormalize

    rng = np.random.default_rng(0)
    x = ms.Tensor((rng.standard_normal((2, 50, 96)) * 3 + 1).astype(np.float32))
    gamma, beta = (ms.Tensor(rng.standard_normal(96).astype(np.float32)) for _ in range(2))
    for fast, kernel in zip(_grads(_RowNormalize(1e-6), x, gamma, beta), _grads(_Normalize(1e-6), x, gamma, beta)):
        np.testing.assert_allclose(fast, kernel, rtol=0, atol=2e-6 * np.abs(kernel).max())


def test_gemv_backward_of_softmax_equals_the_kernels():
    from ms_vit.models.layers import RowSoftmax, Softmax

    x = ms.Tensor((np.random.default_rng(0).standard_normal((2, 3, 50, 50)) * 4).astype(np.float32))
    (fast,), (kernel,) = _grads(RowSoftmax(), x), _grads(Softmax(), x)
    np.testing.assert_allclose(fast, kernel, rtol=0, atol=1e-6 * np.abs(kernel).max())


def test_norm_impl_kernel_keeps_mindsporess_layer_norm_backward_and_is_a_run_option():
    from ms_vit.config import make_train_config
    from ms_vit.models.layers import _RowNormalize

    net = ms_vit.create_model(TINY, norm_impl="kernel")
    assert not any(isinstance(cell, _RowNormalize) for _, cell in net.cells_and_names())
    assert make_train_config({"norm_impl": "kernel"}).model_overrides()["norm_impl"] == "kernel"
    with pytest.raises(ms_vit.errors.ConfigError, match="norm_impl"):
        make_train_config({"norm_impl": "fast"})


def test_whole_network_gradients_with_the_gemv_backward_equal_the_kernels(monkeypatch, images):
    """The tiny ViT's every parameter gradient with the CPU fast path's written-out backward (LayerNorm and softmax
    by GEMV) equals the same network's with MindSpore's kernels, same weights and input."""
    from ms_vit.models import layers
    from ms_vit.models.layers import RowSoftmax, _RowNormalize

    ms.set_seed(0)
    fast = ms_vit.create_model(TINY, norm_impl="gemv")
    monkeypatch.setattr(layers, "_on_cpu", lambda: False)  # softmax_cell then builds MindSpore's kernel softmax
    kernel = ms_vit.create_model(TINY, norm_impl="kernel")
    assert not any(isinstance(c, (RowSoftmax, _RowNormalize)) for _, c in kernel.cells_and_names())
    assert any(isinstance(c, RowSoftmax) for _, c in fast.cells_and_names())
    ms.load_param_into_net(kernel, {p.name: ms.Parameter(ms.Tensor(p.asnumpy()), name=p.name)
                                    for p in fast.get_parameters()}, strict_load=True)
    x, labels = ms.Tensor(images(4)), ms.Tensor(np.array([0, 3, 5, 9], np.int32))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    grads = []
    for net in (fast, kernel):
        net.set_train(True)
        step = ms.value_and_grad(nn.WithLossCell(net, loss), None, net.trainable_params())
        grads.append([g.asnumpy() for g in step(x, labels)[1]])
    assert len(grads[0]) == len(fast.trainable_params())
    for name, a, b in zip([p.name for p in fast.trainable_params()], *grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(np.abs(b).max(), 1e-3), err_msg=name)
