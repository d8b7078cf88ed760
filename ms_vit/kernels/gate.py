"""The bf16 gate and the kernel build: does this CPU run bf16 matmuls natively, where are oneDNN's headers and
library, and the compiled ``bf16_matmul.so`` (built once per source, flags and oneDNN, into a cache folder).

Every "cannot" comes back as one line naming the cause and the fix, never as an exception from the gate, so
``amp_level: auto`` stays fp32 on machines without a compiler, without oneDNN or without bf16 instructions.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bf16_matmul.cpp")
# The x86 flags of CPUs whose bf16 dot products oneDNN uses (VDPBF16PS, AMX tiles). Plain AVX-512 only emulates
# bf16 (slower than its fp32), and AVX2 has no bf16 matmul in oneDNN at all.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The self-contained oneDNN wheels (they need only the system's libgomp); newer "onednn" wheels pull in Intel's
# TBB, SVML and SYCL runtimes.
ONEDNN_WHEELS = ("onednn-cpu-gomp==2023.2.0", "onednn-devel-cpu-gomp==2023.2.0")
INSTALL_HINT = f"pip install {' '.join(ONEDNN_WHEELS)}"
CXXFLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-pthread")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags of the first processor in ``cpuinfo`` (the text of /proc/cpuinfo; read when None)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / Arm spelling
            return set(value.split())
    return set()


def cpu_bf16(cpuinfo: str | None = None) -> tuple[bool, str]:
    """(True, which flag) when the CPU has native bf16 dot products; else (False, why not), one line."""
    flags = cpu_flags(cpuinfo)
    found = [flag for flag in BF16_FLAGS if flag in flags]
    if found:
        return True, f"CPU has {' and '.join(found)}"
    if not flags:
        return False, "CPU flags unreadable (no /proc/cpuinfo): bf16 needs avx512_bf16 or amx_bf16"
    vector = [flag for flag in ("avx512f", "avx2") if flag in flags]
    return False, (f"CPU has no avx512_bf16 or amx_bf16 (has {', '.join(vector) or 'neither avx512f nor avx2'}): "
                   "bf16 matmuls would run no faster than fp32")


def _dist_file(dist_name: str, suffix: str) -> str | None:
    """The installed path of the file of distribution ``dist_name`` whose path ends with ``suffix``."""
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/").endswith(suffix):
            path = os.path.realpath(str(dist.locate_file(entry)))
            if os.path.exists(path):
                return path
    return None


def find_onednn() -> tuple[str, str] | str:
    """(include folder, library folder) of oneDNN 3.x, or the one-line reason it is missing.

    ``MS_VIT_ONEDNN_ROOT`` (a folder with include/ and lib/) wins; otherwise the onednn wheels' files, wherever pip
    put them (the wheels install into the environment's include/ and lib/, outside site-packages)."""
    root = os.environ.get("MS_VIT_ONEDNN_ROOT")
    if root:
        include, lib = os.path.join(root, "include"), os.path.join(root, "lib")
        if not os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
            return f"MS_VIT_ONEDNN_ROOT={root} has no include/oneapi/dnnl/dnnl.hpp: point it at a oneDNN 3.x install"
        return include, lib
    header = _dist_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
    library = _dist_file("onednn-cpu-gomp", "libdnnl.so.3") or _dist_file("onednn-devel-cpu-gomp", "libdnnl.so")
    if header is None or library is None:
        missing = "headers" if header is None else "library"
        return f"oneDNN {missing} not found: {INSTALL_HINT}"
    return os.path.dirname(os.path.dirname(os.path.dirname(header))), os.path.dirname(library)


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("MS_VIT_KERNEL_CACHE") or os.path.join(base, "ms_vit", "kernels")


def _link_name(lib: str) -> list[str]:
    # Link the versioned file by path when the unversioned symlink is missing (some wheel installs lack it).
    if os.path.exists(os.path.join(lib, "libdnnl.so")):
        return [f"-L{lib}", "-ldnnl"]
    return [os.path.join(lib, "libdnnl.so.3")]


def compile_library(source: str, name: str, flags, args=(), depends=(), fix: str = "") -> tuple[str | None, str]:
    """Compile ``source`` with ``flags`` (and ``args`` after it: include and link options) into
    ``<cache>/<hash>/<name>``, once per source, flags, args, compiler, machine and ``depends`` (what else the build
    depends on, e.g. the CPU's flags under -march=native); (path, "") or (None, the one-line reason, then ``fix``)."""
    cxx = compiler()
    if cxx is None:
        return None, (f"no C++ compiler ({os.environ.get('CXX', 'g++')} not on PATH): install g++ "
                      "(e.g. apt-get install g++) or set CXX")
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read())
    for header in sorted(glob.glob(os.path.join(os.path.dirname(source), "*.h"))):  # what the sources include
        with open(header, "rb") as f:
            digest.update(f.read())
    digest.update("\0".join([cxx, *flags, *args, *depends, platform.machine()]).encode())
    folder = os.path.join(cache_root(), digest.hexdigest()[:16])
    target = os.path.join(folder, name)
    if os.path.exists(target):
        return target, ""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return None, f"kernel cache folder {folder} not writable ({e.strerror}): set MS_VIT_KERNEL_CACHE to another"
    # Compile to a unique name beside the target and rename: concurrent processes (data workers, ranks) each build
    # their own and the last rename wins, and no process ever loads a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *flags, source, "-o", tmp, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip()[:200])
            return None, f"compiling {os.path.basename(source)} failed ({first.strip()})" + (f": {fix}" if fix else "")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target, ""


# The kernels without oneDNN (gelu_erf, layer_norm, reduce). -fno-trapping-math lets GCC turn clamps and sign choices
# into vector selects; -fopenmp-simd honours "omp simd reduction" pragmas (vectorised sums without -ffast-math) and
# links no OpenMP runtime; -march=native gives the CPU's widest vectors, so the CPU's flags join the cache key.
NATIVE_CXXFLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fno-trapping-math", "-fopenmp-simd",
                   "-march=native")


def compile_native(name: str) -> tuple[str | None, str]:
    """``ms_vit/kernels/<name>.cpp`` compiled for this CPU into ``<cache>/<hash>/<name>.so``: (path, "") or (None,
    the one-line reason)."""
    source = os.path.join(os.path.dirname(SOURCE), f"{name}.cpp")
    return compile_library(source, f"{name}.so", NATIVE_CXXFLAGS, depends=sorted(cpu_flags()))


@functools.lru_cache(maxsize=None)
def build() -> tuple[str | None, str]:
    """(path of the compiled .so, "") or (None, the one-line reason it cannot be built). Compiled once per source,
    flags, compiler and oneDNN location; later calls, and later processes, reuse the cached file."""
    if compiler() is None:
        return compile_library(SOURCE, "bf16_matmul.so", CXXFLAGS, [])
    found = find_onednn()
    if isinstance(found, str):
        return None, found
    include, lib = found
    return compile_library(SOURCE, "bf16_matmul.so", CXXFLAGS, args=[f"-I{include}", *_link_name(lib), f"-Wl,-rpath,{lib}"],
                           fix=f"check g++ and {INSTALL_HINT}")


def choose_bf16(request: str, device_target: str, flag: str, off_cpu_fix: str, no_kernel_fix: str,
                gate=None) -> tuple[bool, str]:
    """The one rule behind ``amp_level`` (training) and ``--precision`` (eval, infer): (whether the GEMMs go bf16,
    why). ``request`` "bf16" runs on CPU only and needs the kernel built (else a one-line ConfigError naming ``flag``
    and the fix), and is taken without bf16 instructions too (bf16's numbers at fp32's speed); "auto" takes bf16
    where ``gate`` (default ``bf16_status``) says the CPU has it and the kernel builds."""
    gate = gate or bf16_status
    if request == "bf16":
        from ms_vit.errors import ConfigError

        if device_target != "CPU":
            raise ConfigError(f"{flag} bf16 runs on CPU only, not {device_target}: {off_cpu_fix}")
        path, reason = build()
        if path is None:
            raise ConfigError(f"{flag} bf16: {reason}; {no_kernel_fix}")
        native, why = gate()
        return True, why if native else f"as asked, without the speed: {why}"
    if device_target != "CPU":
        return False, "the bf16 kernel is for CPUs"
    return gate()


@functools.lru_cache(maxsize=None)
def matmul_impl(m: int = 256, k: int = 256, n: int = 256) -> str:
    """The oneDNN implementation this machine gets for a bf16 matmul, e.g. "brg:avx512_core_bf16", or
    "gemm:jit:f32 (bf16-rounded fp32 operands)" where oneDNN has no bf16 matmul, then oneDNN's version and runtime;
    "" when the kernel is not built."""
    import ctypes
    import importlib

    path, _ = build()
    if path is None:
        return ""
    # MindSpore ships its own libdnnl.so.3, which the model's kernel resolves to once MindSpore is loaded: load it
    # first so that the name reported is the one the model gets, not the wheel's.
    importlib.import_module("mindspore")
    out = ctypes.create_string_buffer(256)
    ok = ctypes.CDLL(path).ms_vit_bf16_impl(ctypes.c_int64(m), ctypes.c_int64(k), ctypes.c_int64(n), out, 256)
    return out.value.decode() if ok else ""


def bf16_status(cpuinfo: str | None = None) -> tuple[bool, str]:
    """The gate of ``amp_level: auto``: (True, what is taken) when the CPU has native bf16 and the kernel builds,
    else (False, the one-line reason). ``MS_VIT_BF16=0`` in the environment keeps fp32 (the test suite sets it, so
    that its fp32 figures hold on every CPU; the bf16 tests ask for bf16 explicitly)."""
    if os.environ.get("MS_VIT_BF16") == "0":
        return False, "MS_VIT_BF16=0 in the environment keeps fp32"
    native, why = cpu_bf16(cpuinfo)
    if not native:
        return False, why
    path, reason = build()
    if path is None:
        return False, f"{why}, but {reason}"
    return True, f"{why}; oneDNN bf16 matmul {matmul_impl()}"
