"""The C++ LayerNorm of the CPU path (``_KernelNormalize`` over ``ms_vit/kernels/layer_norm.cpp``): its outputs and
gradients against MindSpore's own LayerNorm, in GRAPH mode, and the tiny ViT's logits with it against the GEMV
path."""

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of
from mindspore import nn

import ms_vit
from ms_vit.kernels import layer_norm as layer_norm_kernel
from ms_vit.models.layers import LayerNorm, _KernelNormalize, _Normalize, _RowNormalize

pytestmark = pytest.mark.skipif(layer_norm_kernel.build()[0] is None,
                                reason=f"LayerNorm kernel cannot be built: {layer_norm_kernel.build()[1]}")

# ViT-B/16 tokens (several threads), a few rows of odd width (C not a multiple of the 16-float vector: the loops'
# tails), and one row.
SHAPES = [(2, 197, 768), (3, 5, 7), (4, 100), (1, 33)]
EPS = 1e-6


@pytest.fixture(autouse=True)
def graph_mode():
    before = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=before)


def inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    # A mean far from 0 next to the spread, where E[x^2] - mean^2 would cancel.
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    gamma, beta = (rng.standard_normal(shape[-1]).astype(np.float32) for _ in range(2))
    return ms.Tensor(x), ms.Tensor(gamma), ms.Tensor(beta)


def kernel_cell():
    return _KernelNormalize(EPS, layer_norm_kernel.layer_norm_ops())


def close(got, want, rtol):
    """Within ``rtol`` of the largest magnitude of ``want``: elementwise relative error is meaningless where the
    value crosses 0."""
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * max(np.abs(want).max(), 1e-6))


class Weighted(nn.Cell):
    """sum(y * w): a loss whose gradient dy = w is not constant along a row (a constant dy's dx is 0)."""

    def __init__(self, normalize, w):
        super().__init__()
        self.normalize, self.w = normalize, ms.Tensor(w)

    def construct(self, x, gamma, beta):
        return (self.normalize(x, gamma, beta)[0] * self.w).sum()


def grads(normalize, x, gamma, beta):
    w = np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)
    return [g.asnumpy() for g in ms.grad(Weighted(normalize, w), grad_position=(0, 1, 2))(x, gamma, beta)]


@pytest.mark.parametrize("shape", SHAPES)
def test_outputs_equal_mindspores_layer_norm(shape):
    x, gamma, beta = inputs(shape)
    want = [t.asnumpy() for t in _Normalize(EPS)(x, gamma, beta)]
    got = [t.asnumpy() for t in kernel_cell()(x, gamma, beta)]
    assert [g.shape for g in got] == [w.shape for w in want] == [shape, shape[:-1] + (1,), shape[:-1] + (1,)]
    assert all(g.dtype == np.float32 for g in got)
    for name, g, w in zip(("y", "mean", "variance"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max(), err_msg=name)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_equal_mindspores_layer_norm_grad(shape):
    x, gamma, beta = inputs(shape, seed=1)
    want = grads(_Normalize(EPS), x, gamma, beta)
    got = grads(kernel_cell(), x, gamma, beta)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert g.shape == w.shape, name
        close(g, w, 1e-4)


def test_gradients_are_the_same_on_every_call():
    """dgamma and dbeta come from per-thread partials added in a fixed order, not in the order threads finish."""
    x, gamma, beta = inputs((2, 197, 768), seed=2)
    cell = kernel_cell()
    first, second = grads(cell, x, gamma, beta), grads(cell, x, gamma, beta)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_auto_takes_the_kernel_on_cpu_and_gemv_and_kernel_keep_their_meaning():
    assert isinstance(LayerNorm((8,), impl="auto").normalize, _KernelNormalize)
    gemv = LayerNorm((8,), impl="gemv").normalize
    assert isinstance(gemv, _RowNormalize) and not isinstance(gemv, _KernelNormalize)
    assert type(LayerNorm((8,), impl="kernel").normalize) is _Normalize


def test_auto_falls_back_to_the_gemv_backward_without_the_kernel(monkeypatch):
    monkeypatch.setattr(layer_norm_kernel, "layer_norm_ops", lambda: None)
    assert type(LayerNorm((8,), impl="auto").normalize) is _RowNormalize


def test_tiny_vit_logits_with_the_kernel_equal_the_gemv_path(images):
    ms.set_seed(0)
    gemv = ms_vit.create_model(TINY, norm_impl="gemv")
    fast = ms_vit.create_model(TINY)
    norms = [cell for _, cell in fast.cells_and_names() if isinstance(cell, LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(isinstance(n.normalize, _KernelNormalize) for n in norms)
    ms.load_param_into_net(fast, {p.name: ms.Parameter(ms.Tensor(p.asnumpy()), name=p.name)
                                  for p in gemv.get_parameters()}, strict_load=True)
    x = images(4) * 3
    np.testing.assert_allclose(logits_of(fast, x), logits_of(gemv, x), atol=1e-5, rtol=0)
