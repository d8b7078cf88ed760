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
    assert any(line == (f"AMP bf16: {why}" if native else f"AMP bf16: as asked, without the speed: {why}")
               for line in lines), lines
    held = [value for _, cell in result.net.cells_and_names() for value in vars(cell).values()
            if isinstance(value, (ops.MatMul, ops.BatchMatMul, ops.Custom))]
    assert held and all(isinstance(value, ops.Custom) for value in held)  # no fp32 GEMM attribute left
    with pytest.raises(ms_vit.MsVitError, match="amp_level bf16 runs on CPU only, not GPU"):
        resolve_amp_level("bf16", "GPU")
