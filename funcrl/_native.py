"""Builds funcrl's C++ sources (``funcrl/csrc``) into shared libraries at first use, cached.

Each library is compiled once per source, torch version, compiler and C++ ABI with the C++
compiler Inductor uses, against the running torch's headers, and kept in
``$FUNCRL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/funcrl``, else ``~/.cache/funcrl``). The folder
is not Inductor's: a process that points ``TORCHINDUCTOR_CACHE_DIR`` at a fresh folder (a cold
compile, a test) still finds the libraries built. The write is atomic, so concurrent processes
building the same library each get a whole one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["SOURCES", "cache_dir", "library"]

SOURCES = Path(__file__).parent / "csrc"


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    explicit = os.environ.get("FUNCRL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "funcrl"


def _compiler() -> str:
    from torch._inductor.cpp_builder import get_cpp_compiler

    return get_cpp_compiler()


def library(name: str, link: Sequence[str] = ("c10",), owner: str = "funcrl") -> Path:
    """The shared library built from ``csrc/{name}.cpp``, building it if no build exists.

    Args:
        name: the source's stem in ``funcrl/csrc``.
        link: torch libraries to link (``c10``, ``torch_cpu``).
        owner: the caller named in errors.

    Raises:
        RuntimeError: the compiler could not be run or failed (its stderr's tail included).
    """
    from funcrl import checkpoint

    source = SOURCES / f"{name}.cpp"
    cxx = _compiler()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    tag = hashlib.sha256(
        b"\0".join(
            [source.read_bytes(), torch.__version__.encode(), cxx.encode(), str(abi).encode()]
            + [lib.encode() for lib in link]
        )
    ).hexdigest()[:20]
    folder = cache_dir()
    target = folder / f"{name}_{tag}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    from torch.utils.cpp_extension import include_paths, library_paths

    torch_lib = library_paths()[0]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / f"{name}.so"
        cmd = [
            cxx,
            "-O3",
            "-std=c++17",
            "-w",  # torch's headers warn under C++17; the build's errors still show
            "-shared",
            "-fPIC",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *(f"-I{p}" for p in include_paths()),
            str(source),
            f"-L{torch_lib}",
            *(f"-l{lib}" for lib in link),
            f"-Wl,-rpath,{torch_lib}",
            "-o",
            str(built),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"{owner}: cannot run the C++ compiler {cxx!r}: {e}") from e
        if proc.returncode != 0:
            raise RuntimeError(
                f"{owner}: building {source.name} with {cxx} failed "
                f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        checkpoint.atomic_write(target, built.read_bytes())
    return target
