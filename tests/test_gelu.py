"""The exact (erf) GELU of the CPU path: ``ErfGELU`` on the C++ kernel against float64 references, in GRAPH mode,
and ``gelu_cell("erf", "auto")`` taking it on CPU (MindSpore's kernel without a compiler)."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from scipy.special import erf

from ms_vit.kernels import gelu as gelu_kernel
from ms_vit.models.layers import ErfGELU, gelu_cell

pytestmark = pytest.mark.skipif(gelu_kernel.build()[0] is None, reason="no C++ compiler for the erf GELU kernel")

# Dense near 0 where the curve bends, out to |x| = 40 where Phi is 0 or 1 to float precision and the
# approximations' clamps act.
X = np.concatenate([np.linspace(-8, 8, 160001), np.linspace(-40, 40, 80001)]).astype(np.float32)


def exact(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def exact_grad(x):
    x = x.astype(np.float64)
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


@pytest.fixture
def graph_mode():
    before = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=before)


def within(got, want, atol):
    # 1e-6 absolute, plus half a float32 ulp of the value: past |x| = 16 the float32 grid itself is coarser than
    # 1e-6, so no float32 result can be closer than its own rounding.
    err = np.abs(got.astype(np.float64) - want)
    bound = atol + np.spacing(np.abs(want).astype(np.float32)).astype(np.float64) / 2
    assert (err <= bound).all(), f"max error {err.max():.3g} at x = {X[np.argmax(err - bound)]}"


def test_forward_within_1e6_of_the_exact_gelu(graph_mode):
    within(ErfGELU(gelu_kernel.gelu_erf_ops())(ms.Tensor(X)).asnumpy(), exact(X), 1e-6)


def test_gradient_within_1e6_of_the_analytic_derivative(graph_mode):
    grad = ms.grad(ErfGELU(gelu_kernel.gelu_erf_ops()))(ms.Tensor(X)).asnumpy()
    within(grad, exact_grad(X), 1e-6)


class Weighted(nn.Cell):
    def __init__(self, w):
        super().__init__()
        self.gelu, self.w = ErfGELU(gelu_kernel.gelu_erf_ops()), ms.Tensor(w)

    def construct(self, x):
        return (self.gelu(x) * self.w).sum()


def test_gradient_scales_with_the_incoming_gradient(graph_mode):
    x = ms.Tensor(X[:1000].reshape(10, 100))
    dout = np.random.default_rng(0).standard_normal((10, 100)).astype(np.float32)
    got = ms.grad(Weighted(dout))(x).asnumpy()
    np.testing.assert_allclose(got, dout * exact_grad(X[:1000].reshape(10, 100)), atol=1e-6, rtol=0)


def test_matches_mindspores_kernel_on_a_batch_shape(graph_mode):
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 197, 64)).astype(np.float32) * 3)
    np.testing.assert_allclose(ErfGELU(gelu_kernel.gelu_erf_ops())(x).asnumpy(),
                               nn.GELU(approximate=False)(x).asnumpy(), atol=2e-6, rtol=0)


def test_auto_takes_the_kernel_on_cpu():
    assert isinstance(gelu_cell("erf", "auto"), ErfGELU)
    assert isinstance(gelu_cell("erf", "kernel"), nn.GELU)


def test_without_a_compiler_auto_keeps_mindspores_gelu(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("MS_VIT_KERNEL_CACHE", str(tmp_path))
    gelu_kernel.build.cache_clear()
    gelu_kernel.gelu_erf_ops.cache_clear()
    try:
        assert gelu_kernel.build()[0] is None
        assert isinstance(gelu_cell("erf", "auto"), nn.GELU)
    finally:
        gelu_kernel.build.cache_clear()
        gelu_kernel.gelu_erf_ops.cache_clear()


def tanh_form(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def tanh_form_grad(x):
    x = x.astype(np.float64)
    u = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)
    du = np.sqrt(2.0 / np.pi) * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1.0 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * du


def test_tanh_form_on_the_kernel_matches_float64_and_sigmoid_gelu(graph_mode):
    """TanhGELU (the CPU default for the tanh form where the kernel builds): forward and gradient within 1e-6 of
    float64 over [-40, 40], and equal to SigmoidGELU (the same function on MindSpore's ops) within 1e-6."""
    from ms_vit.models.layers import SigmoidGELU, TanhGELU

    cell = TanhGELU(gelu_kernel.gelu_tanh_ops())
    within(cell(ms.Tensor(X)).asnumpy(), tanh_form(X), 1e-6)
    within(ms.grad(cell)(ms.Tensor(X)).asnumpy(), tanh_form_grad(X), 1e-6)
    x = ms.Tensor(X[::97])
    np.testing.assert_allclose(cell(x).asnumpy(), SigmoidGELU()(x).asnumpy(), atol=1e-6, rtol=0)
    assert isinstance(gelu_cell("tanh", "auto"), TanhGELU)
