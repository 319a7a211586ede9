"""Optional native kernels for the elementwise steps of the imagination loop (elementwise.c).

The C source is compiled on first use with the system's C compiler (`cc`, or $CC) for this CPU
(-O3 -march=native, about 0.3 s) into a cache directory ($AGAP_CACHE_DIR, default
~/.cache/amortization_gap_ssm), keyed by the source, the compiler and the CPU, and loaded with ctypes: no
Python headers, no build step at install. Where no compiler works, or with AGAP_NATIVE=0, kernels()
returns None and the callers keep their eager PyTorch path (same values to float32 rounding; status()
says whether the kernels loaded, or why not).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).with_name("elementwise.c")
# -ffast-math lets the compiler contract, reorder and replace divisions by reciprocal estimates with a Newton
# step (1-2 ulp; the kernels' results are checked against float64 in tests/test_native_kernels.py), but
# not assume away NaN and infinities (-fno-finite-math-only: NaN must propagate). It is given to the compile
# step only: linked with it, gcc before 13 adds crtfastmath.o to the library, which would flush denormals
# to zero in the whole process when it loads.
FAST_MATH = ["-ffast-math", "-fno-finite-math-only"]
FLAG_SETS = (["-O3", "-march=native", *FAST_MATH], ["-O3", *FAST_MATH])   # the second without -march=native
LINK_FLAGS = ["-shared"]


def enabled_by_environment() -> bool:
    return os.environ.get("AGAP_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get("AGAP_CACHE_DIR") or Path.home() / ".cache" / "amortization_gap_ssm")


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return flags or f"{platform.machine()} {platform.processor()}"


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str) -> Path:
    """The shared library for this source, compiler and CPU: from the cache, or compiled into it (written
    under a temporary name and renamed, so that processes compiling at once never load a partial file)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    source = SOURCE.read_bytes()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, version.encode(), _cpu_signature().encode(),
                                         " ".join(flags + ["|"] + LINK_FLAGS).encode()])).hexdigest()[:16]
        target = cache_dir() / f"elementwise-{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            obj, lib = os.path.join(tmp, "elementwise.o"), os.path.join(tmp, "elementwise.so")
            for command in ([compiler, *flags, "-fPIC", "-c", "-o", obj, str(SOURCE)],
                            [compiler, *LINK_FLAGS, "-o", lib, obj]):
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    errors.append(f"{' '.join(command)}: {result.stderr.strip()[:300]}")
                    break
            else:
                os.replace(lib, target)
                return target
    raise RuntimeError("; ".join(errors))


_VOID_P, _LONG, _FLOAT = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
_SIGNATURES = {
    "elu_rows": [_VOID_P, _LONG, _LONG, _LONG],
    "add_elu_rows": [_VOID_P, _LONG, _VOID_P, _LONG, _LONG, _LONG],
    "gru_update_rows": [_VOID_P, _LONG] * 5 + [_LONG, _LONG],
    "sample_gaussian_rows": [_VOID_P, _LONG] * 3 + [_FLOAT, _LONG, _LONG],
}


def _load(compiler: str) -> tuple[ctypes.CDLL, Path]:
    """The built library, loaded, with its functions' C signatures set (so that pointers pass as 64-bit); a
    cached file that does not load (truncated by a full disk, say) is removed and built again, once."""
    path = _build(compiler)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        path = _build(compiler)
        lib = ctypes.CDLL(str(path))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib, path


@lru_cache(maxsize=None)
def _loaded() -> tuple[Optional[ctypes.CDLL], str]:
    """(the loaded library, or None where it is disabled or cannot be built; what happened), once per process;
    a failed build warns, once."""
    if not enabled_by_environment():
        return None, "eager PyTorch (native kernels disabled by AGAP_NATIVE=0)"
    compiler = _compiler()
    if compiler is None:
        return None, "eager PyTorch (no C compiler found: set CC or install gcc for the native kernels)"
    try:
        lib, path = _load(compiler)
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:   # AttributeError: a missing symbol
        why = f"eager PyTorch (native kernels failed to build or load: {e})"
        warnings.warn(f"world_models.native: {why}", RuntimeWarning, stacklevel=3)
        return None, why
    return lib, f"native kernels ({path})"


def set_enabled(enabled: bool) -> None:
    """Switch the kernels on or off for this process from now on, as AGAP_NATIVE does at start (benchmarks use it to
    time both paths in one run); loops set up after the call take the new path."""
    os.environ["AGAP_NATIVE"] = "1" if enabled else "0"
    _loaded.cache_clear()


def kernels() -> Optional[ctypes.CDLL]:
    """The loaded library (functions as in elementwise.c), or None (status() says why)."""
    return _loaded()[0]


def status() -> str:
    """Whether the kernels are loaded (from where), or why not. Which steps a loop takes also depends on its
    dtype and thread count: world_models.fused_imagine.elementwise_path()."""
    return _loaded()[1]


def rows(t: torch.Tensor) -> tuple[int, int]:
    """(data pointer, row stride) of a 2-d float32 CPU tensor whose rows are contiguous, as the kernels take
    them."""
    if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2 or (t.stride(1) != 1 and t.shape[1] > 1):
        raise ValueError(f"native kernels take 2-d float32 CPU tensors with contiguous rows, got {t.dtype} "
                         f"{t.device} shape {tuple(t.shape)} strides {t.stride()}")
    return t.data_ptr(), t.stride(0)
