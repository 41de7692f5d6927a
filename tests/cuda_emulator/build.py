"""Compile dffx's CUDA kernels (``csrc/cuda/*.cu``) as C++ against the CPU emulator beside this
file, into one shared library with a C interface (``c_api.cpp``) for ctypes. Tests only.

The kernel files are not changed: a copy of each is compiled after two textual rewrites, a launch
``kernel<<<grid, block, shared, stream>>>(args)`` becoming
``::dffx_emu::Launch(grid, block, shared, stream).run(kernel, args)``, and every ``__shared__``
array declaration followed by a call that poisons it in each block (:func:`poison_shared_arrays`);
a ``#line`` directive keeps compiler messages pointing at the original file. Usage: ``python build.py [OUT_DIR] [--sanitize]``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KERNEL_DIR = REPO / "csrc" / "cuda"
# device.cu only asks the driver for a device count; the emulator answers that itself.
KERNEL_FILES = ("angular_softmax.cu", "raster.cu", "sampling.cu")
SELFTEST = HERE / "selftest.cu"  # kernels that exercise the emulator itself
EMULATOR_FILES = ("emulator.cpp", "c_api.cpp")
HEADERS = ("cuda_runtime.h", "math_constants.h", "emulator.hpp")
LIBRARY = "libdffx_cuda_emulated.so"
FLAGS = ("-std=c++17", "-fPIC", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare")
OPTIMISE = ("-O2",)
# AddressSanitizer, the CPU stand-in for compute-sanitizer's memcheck: every out-of-bounds read or
# write of a kernel into its (host-allocated) buffers is reported. Needs libasan preloaded into
# the Python process that loads the library (see asan_runtime).
SANITIZE = ("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer")
# name or name<template args>, then <<<config>>>(
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
# A static shared array: __shared__ [__align__(n)] type name[size];
SHARED = re.compile(r"(__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?[A-Za-z_][\w:]*\s+([A-Za-z_]\w*)\s*\[[^\];]+\]\s*;)")


def rewrite_launches(source: str, name: str = "<source>") -> tuple[str, int]:
    """Rewrite every ``k<<<...>>>(`` of one .cu file; returns (new source, launches rewritten).

    Raises:
        RuntimeError: a ``<<<`` the pattern did not match (the emulator would silently miss it).
    """
    rewritten, count = LAUNCH.subn(r"::dffx_emu::Launch(\2).run(\1, ", source)
    if "<<<" in rewritten:
        raise RuntimeError(f"{name}: a kernel launch the emulator's rewrite does not understand")
    return rewritten, count


def poison_shared_arrays(source: str, name: str = "<source>") -> tuple[str, int]:
    """Follow every ``__shared__`` array declaration of one .cu file with a call that fills the
    array with 0xFF bytes (NaN floats and doubles, -1 integers) the first time a thread of each
    block reaches it: shared memory starts undefined in every block on a GPU, so a kernel that
    reads an entry before writing it gets NaN here instead of the zeros of a static array or
    the previous block's values. Returns (new source, arrays poisoned).

    Raises:
        RuntimeError: a ``__shared__`` the pattern did not match (it would go unpoisoned).
    """
    rewritten, count = SHARED.subn(r"\1 ::dffx_emu::poison_shared(\2, sizeof(\2));", source)
    if rewritten.count("__shared__") != count:
        raise RuntimeError(f"{name}: a __shared__ declaration the emulator's rewrite does not understand")
    return rewritten, count


def _inputs_digest(compiler: str, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256(" ".join((compiler,) + flags).encode())
    for path in _cuda_sources() + [HERE / f for f in EMULATOR_FILES + HEADERS]:
        digest.update(path.read_bytes())
    for path in sorted((REPO / "csrc" / "common").glob("*.hpp")) + sorted((REPO / "csrc" / "include").rglob("*.hpp")):
        digest.update(path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _cuda_sources() -> list[Path]:
    return [KERNEL_DIR / f for f in KERNEL_FILES] + [SELFTEST]


def find_compiler() -> str | None:
    """The C++ compiler to use: ``$CXX``, else ``c++`` / ``g++`` / ``clang++`` on PATH."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    return next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def asan_runtime(compiler: str | None = None) -> str | None:
    """``LD_PRELOAD`` for a Python process that loads the sanitized library: the compiler's
    AddressSanitizer runtime and its C++ runtime (without the latter preloaded too, ASan cannot
    intercept C++ exceptions in a process whose executable is C). None when either is missing."""
    compiler = compiler or find_compiler()
    if compiler is None:
        return None
    paths = []
    for name in ("libasan.so", "libstdc++.so.6"):
        done = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True)
        path = Path(done.stdout.strip())
        if done.returncode != 0 or not path.is_absolute() or not path.exists():
            return None
        paths.append(str(path.resolve()))
    return " ".join(paths)


def build(out_dir: Path, compiler: str | None = None, sanitize: bool = False) -> Path:
    """Build (or reuse, when sources and flags are unchanged) the emulated kernels library.

    Returns the path of the shared library inside ``out_dir/<flavour>-<digest>/``; libraries of
    the same flavour built from older sources are deleted. ``sanitize`` builds it with
    AddressSanitizer (load it only into a process that preloads :func:`asan_runtime`).

    Raises:
        RuntimeError: no C++ compiler, or compilation failed (with the compiler's output).
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    flags = FLAGS + (SANITIZE if sanitize else OPTIMISE)
    flavour = "asan" if sanitize else "release"
    target = Path(out_dir) / f"{flavour}-{_inputs_digest(compiler, flags)}"
    library = target / LIBRARY
    if library.exists():
        return library
    for stale in Path(out_dir).glob(f"{flavour}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = target / "src"
    work.mkdir(parents=True, exist_ok=True)
    sources = []
    for original in _cuda_sources():
        text, launches = rewrite_launches(original.read_text(), original.name)
        if launches == 0:
            raise RuntimeError(f"{original.name}: no kernel launch found")
        text, _ = poison_shared_arrays(text, original.name)
        copy = work / (original.name + ".cpp")
        copy.write_text(f'#line 1 "{original}"\n' + text)
        sources.append(copy)
    sources += [HERE / f for f in EMULATOR_FILES]
    includes = ["-I", str(HERE), "-I", str(REPO / "csrc" / "include"), "-I", str(KERNEL_DIR)]

    def compile_one(source: Path) -> Path:
        obj = work / (source.name + ".o")
        run([compiler, *flags, *includes, "-c", str(source), "-o", str(obj)])
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    partial = target / (LIBRARY + ".tmp")
    run([compiler, "-shared", *(SANITIZE if sanitize else ()), *map(str, objects), "-o", str(partial)])
    partial.replace(library)  # only a complete library is ever reused
    return library


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling the CUDA emulator failed:\n{' '.join(command)}\n{done.stdout}{done.stderr}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--sanitize"]
    print(build(Path(args[0]) if args else REPO / "build" / "cuda-emulator", sanitize="--sanitize" in sys.argv))
