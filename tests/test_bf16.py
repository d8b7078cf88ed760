"""The bf16 path's gate (CPU flags, compiler, oneDNN, each with its one-line reason), its build (compiled once into
a cache folder), and its numerics in GRAPH mode: forward and both gradients equal NumPy's product of the
bf16-rounded operands with fp32 accumulation, and differ from fp32 only by that rounding.

On a CPU without bf16 instructions oneDNN has no bf16 matmul; the kernel then multiplies bf16-rounded operands with
oneDNN's fp32 GEMM, which gives the same numbers (a product of two bf16 values is exact in fp32), so the numerics
tests run everywhere the kernel builds."""

import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

import ms_vit
from ms_vit.kernels import gate as kbuild

X86_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
X86_BF16 = "flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni\n"
X86_AMX = "flags\t\t: avx2 avx512f amx_bf16 amx_tile\n"
X86_AVX512 = "flags\t\t: avx2 avx512f avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 sve\n"


def bf16_round(x):
    """fp32 -> nearest bf16 (ties to even), returned as fp32: the top 16 bits after rounding the low 16."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)



@pytest.fixture(autouse=True)
def gate_open(monkeypatch):
    """conftest keeps the suite in fp32 (MS_VIT_BF16=0); these tests exercise the gate itself."""
    monkeypatch.delenv("MS_VIT_BF16", raising=False)


def test_ms_vit_bf16_0_keeps_fp32_even_where_the_cpu_has_bf16(monkeypatch):
    monkeypatch.setenv("MS_VIT_BF16", "0")
    assert kbuild.bf16_status(X86_BF16) == (False, "MS_VIT_BF16=0 in the environment keeps fp32")


@pytest.mark.parametrize("cpuinfo, taken, words", [
    (X86_AVX2, False, ["no avx512_bf16 or amx_bf16", "avx2"]),
    (X86_AVX512, False, ["no avx512_bf16 or amx_bf16", "avx512f"]),
    (ARM, False, ["no avx512_bf16 or amx_bf16"]),
    ("", False, ["unreadable"]),
    (X86_BF16, True, ["avx512_bf16"]),
    (X86_AMX, True, ["amx_bf16"]),
])
def test_gate_on_cpu_flags(cpuinfo, taken, words):
    ok, reason = kbuild.cpu_bf16(cpuinfo)
    assert ok is taken
    assert "\n" not in reason and all(w in reason for w in words), reason


def test_gate_without_bf16_builds_nothing(monkeypatch):
    def no_build():
        raise AssertionError("the gate compiled on a CPU without bf16")

    monkeypatch.setattr(kbuild, "build", no_build)
    assert kbuild.bf16_status(X86_AVX2) == (False, kbuild.cpu_bf16(X86_AVX2)[1])


def test_gate_names_a_missing_compiler_and_onednn(monkeypatch):
    uncached = kbuild.build.__wrapped__
    monkeypatch.setenv("CXX", "no-such-compiler-ms-vit")
    path, reason = uncached()
    assert path is None and "no-such-compiler-ms-vit" in reason and "install g++" in reason
    monkeypatch.setattr(kbuild, "build", uncached)  # the gate's own call, uncached
    ok, reason = kbuild.bf16_status(X86_BF16)
    assert not ok and reason.startswith("CPU has avx512_bf16, but no C++ compiler")

    monkeypatch.delenv("CXX")
    monkeypatch.setattr(kbuild, "_dist_file", lambda *_: None)
    path, reason = uncached()
    assert path is None and reason == f"oneDNN headers not found: {kbuild.INSTALL_HINT}"

    monkeypatch.setenv("MS_VIT_ONEDNN_ROOT", "/nonexistent")
    assert "MS_VIT_ONEDNN_ROOT=/nonexistent has no include/oneapi/dnnl/dnnl.hpp" in kbuild.find_onednn()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The kernel compiled afresh into this session's cache folder (then reused by every test here)."""
    if kbuild.compiler() is None or isinstance(kbuild.find_onednn(), str):
        pytest.skip(kbuild.build.__wrapped__()[1])
    saved = os.environ.get("MS_VIT_KERNEL_CACHE")
    os.environ["MS_VIT_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernels"))
    kbuild.build.cache_clear()
    kbuild.matmul_impl.cache_clear()
    path, reason = kbuild.build()
    assert path is not None, reason
    yield path
    if saved is None:
        os.environ.pop("MS_VIT_KERNEL_CACHE")
    else:
        os.environ["MS_VIT_KERNEL_CACHE"] = saved
    kbuild.build.cache_clear()
    kbuild.matmul_impl.cache_clear()


def test_build_is_cached_and_atomic(kernel):
    folder = os.path.dirname(kernel)
    assert os.listdir(folder) == ["bf16_matmul.so"]  # no temporary file left beside it
    mtime = os.stat(kernel).st_mtime_ns
    assert kbuild.build.__wrapped__() == (kernel, "")  # a new process finds the file: no second compile
    assert os.stat(kernel).st_mtime_ns == mtime


def test_reports_the_implementation(kernel):
    impl = kbuild.matmul_impl()
    if kbuild.cpu_bf16()[0]:
        assert "bf16" in impl and "rounded" not in impl, impl
    else:  # oneDNN's bf16 matmul needs AVX-512: the kernel says it emulates
        assert "(bf16-rounded fp32 operands)" in impl, impl
    assert "; oneDNN 3." in impl and " runtime" in impl


class _MatMul(nn.Cell):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, a, b):
        return self.op(a, b)


def _t(x, flag):
    return np.swapaxes(x, -1, -2) if flag else x


# (transpose_a, transpose_b, shape of A, shape of B): the Dense forms (2-D, and a batch against a 2-D weight), the
# attention's 4-D q.k^T and attn.v, and the transposed-A kinds the gradients use.
CASES = [(False, True, (6, 5), (3, 5)), (False, True, (2, 4, 5), (3, 5)), (False, False, (2, 4, 5), (5, 3)),
         (False, True, (2, 3, 4, 8), (2, 3, 4, 8)), (False, False, (2, 3, 4, 4), (2, 3, 4, 8)),
         (True, False, (2, 5, 4), (2, 5, 3)), (True, True, (5, 4), (3, 5))]


@pytest.mark.parametrize("ta, tb, shape_a, shape_b", CASES)
def test_forward_and_gradients_match_numpy(kernel, ta, tb, shape_a, shape_b):
    from ms_vit.kernels import bf16_matmul_op

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (shape_a, shape_b))
    net = _MatMul(bf16_matmul_op(ta, tb))
    out = net(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    ra, rb = _t(bf16_round(a), ta), _t(bf16_round(b), tb)
    expected = np.matmul(ra.astype(np.float64), rb.astype(np.float64))
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    dy = rng.standard_normal(expected.shape).astype(np.float32)
    da, db = ms.grad(net, grad_position=(0, 1), sens_param=True)(ms.Tensor(a), ms.Tensor(b), ms.Tensor(dy))
    rdy = bf16_round(dy).astype(np.float64)
    want_a = _t(rdy @ np.swapaxes(rb, -1, -2), ta)
    want_b = _t(np.swapaxes(ra, -1, -2) @ rdy, tb)
    if want_b.ndim > b.ndim:  # one weight for every batch: its gradient sums over them
        want_b = want_b.reshape((-1,) + b.shape).sum(0)
    np.testing.assert_allclose(da.asnumpy(), want_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db.asnumpy(), want_b, rtol=1e-5, atol=1e-5)


def test_differs_from_fp32_only_by_bf16_rounding(kernel):
    from ms_vit.kernels import bf16_matmul_op

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((16, 64)).astype(np.float32), rng.standard_normal((24, 64)).astype(np.float32)
    out = _MatMul(bf16_matmul_op(False, True))(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    exact = a.astype(np.float64) @ b.T.astype(np.float64)
    # Each operand moves by at most 2^-9 of itself, so each product by about 2^-8 of |a||b|.
    bound = (np.abs(a) @ np.abs(b).T) * 2.0 ** -8 + 1e-5
    err = np.abs(out - exact)
    assert (err <= bound).all()
    assert err.max() > 1e-4  # and it did round: fp32 operands would be within ~1e-6


def test_rounds_to_nearest_even(kernel):
    from ms_vit.kernels import bf16_matmul_op

    # 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7 (even: down); 1 + 3 * 2^-8 halfway between 1 + 2^-7 and
    # 1 + 2^-6 (even: up); 1 + 2^-9 is below halfway.
    a = np.array([[1 + 2 ** -8], [1 + 3 * 2 ** -8], [1 + 2 ** -9], [-(1 + 3 * 2 ** -8)]], np.float32)
    out = _MatMul(bf16_matmul_op(False, False))(ms.Tensor(a), ms.Tensor(np.ones((1, 1), np.float32))).asnumpy()
    np.testing.assert_array_equal(out[:, 0], [1.0, 1 + 2 ** -6, 1.0, -(1 + 2 ** -6)])
    np.testing.assert_array_equal(out, bf16_round(a))


class _Call(nn.Cell):
    def __init__(self, op, first: bool = False):
        super().__init__()
        self.op, self.first = op, first

    def construct(self, *args):
        out = self.op(*args)
        return out[0] if self.first else out


def _gelu(x, form):
    from scipy.special import erf

    if form == "gelu_erf":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("activation", ["", "gelu_tanh", "gelu_erf"])
def test_fused_dense_adds_the_bias_and_the_gelu_in_the_gemm(kernel, activation):
    """bf16_dense_op: x W^T + b on the bf16-rounded x and W (the bias fp32, added in the GEMM's pass), then the
    GELU; without one, the gradients of x, W and b (= the rows' sum of dy)."""
    from ms_vit.kernels.bf16 import bf16_dense_op

    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 24), (7, 24), (7,)))
    net = _Call(bf16_dense_op(activation))
    out = net(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b)).asnumpy()
    pre = bf16_round(x).astype(np.float64) @ bf16_round(w).astype(np.float64).T + b
    want = _gelu(pre, activation) if activation else pre
    assert out.shape == (2, 5, 7)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    if activation:
        return
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = ms.grad(net, grad_position=(0, 1, 2), sens_param=True)(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b),
                                                                          ms.Tensor(dy))
    rdy = bf16_round(dy).astype(np.float64).reshape(-1, 7)
    np.testing.assert_allclose(dx.asnumpy().reshape(-1, 24), rdy @ bf16_round(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.asnumpy(), rdy.T @ bf16_round(x).reshape(-1, 24), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db.asnumpy(), dy.reshape(-1, 7).sum(0), rtol=1e-5, atol=1e-5)


def _attention(qkv, heads):
    """float64 reference: (context [B, N, C], probabilities [B, H, N, N]) of qkv [B, N, 3C]."""
    b, n, c3 = qkv.shape
    d = c3 // 3 // heads
    q, k, v = qkv.astype(np.float64).reshape(b, n, 3, heads, d).transpose(2, 0, 3, 1, 4)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, n, c3 // 3), p


def test_fused_attention_matches_float64_forward_and_backward(kernel):
    """bf16_attention_op against a float64 reference, with gradients by central differences of a loss that uses
    both outputs (the context and the probabilities): within bf16 rounding (2^-8 relative)."""
    from ms_vit.kernels.bf16 import bf16_attention_op

    heads, rng = 3, np.random.default_rng(3)
    qkv = rng.standard_normal((2, 9, 3 * heads * 8)).astype(np.float32)
    op = bf16_attention_op(heads)
    context, probs = _Call(op)(ms.Tensor(qkv))
    want_c, want_p = _attention(bf16_round(qkv), heads)
    assert context.shape == (2, 9, 24) and probs.shape == (2, heads, 9, 9)
    np.testing.assert_allclose(probs.asnumpy(), want_p, atol=1e-6)  # scores from the rounded qkv: fp32-exact
    np.testing.assert_allclose(context.asnumpy(), want_c, atol=2 ** -8 * np.abs(want_c).max())

    wc, wp = rng.standard_normal(want_c.shape), rng.standard_normal(want_p.shape)

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.op, self.wc, self.wp = op, ms.Tensor(wc.astype(np.float32)), ms.Tensor(wp.astype(np.float32))

        def construct(self, x):
            c, p = self.op(x)
            return (c * self.wc).sum() + (p * self.wp).sum()

    got = ms.grad(Loss())(ms.Tensor(qkv)).asnumpy()

    def loss(x):
        c, p = _attention(x, heads)
        return (c * wc).sum() + (p * wp).sum()

    x64, eps, want = qkv.astype(np.float64), 1e-5, np.zeros(qkv.shape)
    for i in np.ndindex(qkv.shape):
        step = np.zeros_like(x64)
        step[i] = eps
        want[i] = (loss(x64 + step) - loss(x64 - step)) / (2 * eps)
    assert np.abs(got - want).max() < 2 ** -6 * np.abs(want).max(), np.abs(got - want).max()


def test_vit_takes_the_fused_calls_under_bf16(kernel):
    """use_bf16_matmuls puts the ViT's attention on one call and its MLP's GELU inside dense1 at inference (not in
    training, where the GELU's gradient needs its input), and the logits follow the plain bf16 GEMMs' closely."""
    from ms_vit.kernels import use_bf16_matmuls
    from ms_vit.models.vit import Attention, FeedForward

    ms.set_seed(0)
    plain, fused = ms_vit.create_model("vit_tiny_test"), ms_vit.create_model("vit_tiny_test")
    ms.load_param_into_net(fused, plain.parameters_dict())
    use_bf16_matmuls(fused)
    cells = [cell for _, cell in fused.cells_and_names()]
    assert all(c.fused for c in cells if isinstance(c, Attention))
    assert all(c.gelu_in_dense1 for c in cells if isinstance(c, FeedForward))
    x = ms.Tensor(np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32))
    plain.set_train(False)
    fused.set_train(False)
    want, got = plain(x).asnumpy(), fused(x).asnumpy()
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max() and (got.argmax(1) == want.argmax(1)).all()


class _Sum(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net(x).sum()


def test_vit_on_bf16_matmuls(kernel):
    """The tiny ViT with its Dense layers and attention scores on the kernel: same top-1 as fp32, logits within
    bf16 rounding, and a gradient for every weight."""
    from ms_vit.kernels import use_bf16_matmuls

    ms.set_seed(0)
    fp32, bf16 = ms_vit.create_model("vit_tiny_test"), ms_vit.create_model("vit_tiny_test")
    ms.load_param_into_net(bf16, fp32.parameters_dict())
    held = [type(v).__name__ for _, cell in bf16.cells_and_names() for v in vars(cell).values()
            if isinstance(v, (ops.MatMul, ops.BatchMatMul))]
    layers = len(bf16.block_paths())
    assert held.count("MatMul") >= 4 * layers + 1 and held.count("BatchMatMul") >= layers  # Dense layers; scores
    assert use_bf16_matmuls(bf16) == len(held)
    assert use_bf16_matmuls(bf16) == 0  # all replaced
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    fp32.set_train(False)
    bf16.set_train(False)
    want, got = fp32(x).asnumpy(), bf16(x).asnumpy()
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max() and (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() > 0  # the kernel did run

    bf16.set_train(True)
    weights = bf16.trainable_params()
    grads = ms.grad(_Sum(bf16), grad_position=None, weights=weights)(x)
    assert len(grads) == len(weights) and all(np.isfinite(g.asnumpy()).all() for g in grads)
    assert np.abs(grads[-2].asnumpy()).sum() > 0  # the head's weight


def test_a_bf16_fine_tune_trains_and_says_what_it_took(kernel, tiny_run, tmp_path):
    """amp_level bf16 end to end: every GEMM of the trained network on the kernel, the loss falling, the log naming
    the choice (on a CPU without bf16 instructions: the bf16 numbers at fp32's speed, and it says so)."""
    from conftest import read_metrics, train_tiny

    from ms_vit.train.amp import resolve_amp_level

    lines = []
    result = train_tiny(tiny_run.data_dir, tmp_path / "bf16", log=lines.append, amp_level="bf16", epochs=2)
    rows = read_metrics(tmp_path / "bf16")
    assert np.isfinite([float(r["train_loss"]) for r in rows]).all()
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    native, why = kbuild.cpu_bf16()
    # Natively the line goes on to name oneDNN's implementation.
    assert any(line.startswith(f"AMP bf16: {why}") if native else line == f"AMP bf16: as asked, without the speed: {why}"
               for line in lines), lines
    held = [value for _, cell in result.net.cells_and_names() for value in vars(cell).values()
            if isinstance(value, (ops.MatMul, ops.BatchMatMul, ops.Custom))]
    assert held and all(isinstance(value, ops.Custom) for value in held)  # no fp32 GEMM attribute left
    with pytest.raises(ms_vit.MsVitError, match="amp_level bf16 runs on CPU only, not GPU"):
        resolve_amp_level("bf16", "GPU")
