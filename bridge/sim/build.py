"""Builds the OpenAPI simulator library that pyngres loads as the Ingres OpenAPI.

`ensure_ii_system()` returns a directory D laid out like an Ingres
installation, with D/ingres/lib/libiiapi.1.so compiled from csrc/*.c by the
system C compiler. Set II_SYSTEM=D before importing pyngres.

The build is cached under a directory keyed by a hash of the sources, the
compiler and the flags, so an up-to-date library is reused and a changed
source gets a fresh directory. The library is compiled into a temporary file
and renamed into place, so concurrent test processes never see half a file.
No network, no root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["LIBRARY_NAME", "BuildError", "ensure_ii_system", "find_compiler"]

LIBRARY_NAME = "libiiapi.1.so"
SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
CFLAGS = (
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O2",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fvisibility=hidden",
)
_CANDIDATES = ("cc", "gcc", "clang")


class BuildError(RuntimeError):
    """The simulator library could not be built (no compiler, or it failed)."""


def find_compiler() -> str:
    """The C compiler to use: `$CC`, else the first of cc/gcc/clang on PATH."""
    configured = os.environ.get("CC", "").strip()
    if configured:
        found = shutil.which(configured.split()[0])
        if found is None:
            raise BuildError(
                f"CC={configured!r} is not an executable on PATH; install a C compiler or fix CC"
            )
        return found
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise BuildError(
        "no C compiler found (looked for $CC, then cc, gcc, clang on PATH); "
        "install one (e.g. `apt-get install gcc`) to build the OpenAPI simulator"
    )


def _sources() -> list[Path]:
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in {".c", ".h"})


def _build_key(compiler: str) -> str:
    digest = hashlib.sha256()
    digest.update(compiler.encode())
    digest.update(_compiler_identity(compiler).encode())
    digest.update(" ".join(CFLAGS).encode())
    for path in _sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _compiler_identity(compiler: str) -> str:
    try:
        done = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise BuildError(f"cannot run the C compiler {compiler}: {exc}") from exc
    return done.stdout.splitlines()[0] if done.stdout else ""


def _default_cache_dir() -> Path:
    configured = os.environ.get("BRIDGE_SIM_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dbevent-bridge" / "ii_system"


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".libiiapi.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    sources = [str(p) for p in _sources() if p.suffix == ".c"]
    command = [compiler, *CFLAGS, "-o", str(tmp), *sources]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BuildError(
                f"compiling the OpenAPI simulator failed (exit {done.returncode}):\n"
                f"$ {' '.join(command)}\n{done.stderr.strip()}"
            )
        tmp.chmod(0o755)
        tmp.replace(target)  # atomic: readers see the old file or the new one
    except OSError as exc:
        raise BuildError(f"cannot run the C compiler {compiler}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def ensure_ii_system(cache_dir: Path | None = None) -> Path:
    """Return an II_SYSTEM directory holding an up-to-date ingres/lib/libiiapi.1.so.

    `cache_dir` (default: $BRIDGE_SIM_CACHE_DIR, else
    $XDG_CACHE_HOME or ~/.cache, + /dbevent-bridge/ii_system) holds one
    subdirectory per build key. Raises BuildError when no compiler is found or
    the compilation fails.
    """
    compiler = find_compiler()
    root = (cache_dir if cache_dir is not None else _default_cache_dir()) / _build_key(compiler)
    library = root / "ingres" / "lib" / LIBRARY_NAME
    if not library.is_file():
        _compile(compiler, library)
    return root
