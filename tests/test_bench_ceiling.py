"""bench/bench.py's GEMM ceiling runs in a process without the OpenBLAS pins (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE)
while the benchmark's own process, and every other case, keeps them; it names the BLAS kernel it ran. A 64 x 64
matrix keeps it fast."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ms_vit_bench", os.path.join(ROOT, "bench", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_env_drops_only_the_pins(bench):
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "OPENBLAS_NUM_THREADS": "2", "PATH": "/bin"}
    assert bench.ceiling_env(env) == {"OPENBLAS_NUM_THREADS": "2", "PATH": "/bin"}
    assert env["OPENBLAS_CORETYPE"] == "Haswell"  # the caller's mapping is not changed


def test_only_the_ceiling_runs_unpinned(bench, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE" not in bench.case_env("gemm")
    for name in ("ms_infer_b1", "torch_infer_b16", "bf16_gemm", "torchbf16_train_b16"):
        assert bench.case_env(name) is None  # None: the child inherits this process's environment


def test_child_ceiling_sees_no_pins_and_names_its_kernel(bench, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    monkeypatch.setenv("MS_VIT_BENCH_GEMM_SIZE", "64")
    pinned = bench.child("gemm", 1)  # the same case with this process's environment, for contrast
    result = bench.child("gemm", 1, bench.case_env("gemm"))
    assert pinned["openblas_pins"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert result["openblas_pins"] == {} and result["size"] == 64 and result["gflops"] > 0
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell" and os.environ["OPENBLAS_L2_SIZE"] == "1048576"
    pytest.importorskip("threadpoolctl")
    assert pinned["gemm_kernel"].startswith("openblas") and "Haswell" in pinned["gemm_kernel"]
    assert result["gemm_kernel"].startswith("openblas")


def test_json_names_of_the_bf16_cases(bench):
    assert bench.json_name("msbf16_infer_b16") == "ms_bf16_infer_b16"
    assert bench.json_name("torchbf16_train_b16") == "torch_bf16_train_b16"
    assert bench.json_name("ms_infer_b16") == "ms_infer_b16"
