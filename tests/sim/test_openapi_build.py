"""bridge.sim.build: the cached, atomic build of the simulator library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.sim.build import LIBRARY_NAME, BuildError, ensure_ii_system


def test_builds_once_and_reuses_the_cache(tmp_path: Path) -> None:
    root = ensure_ii_system(tmp_path)
    library = root / "ingres" / "lib" / LIBRARY_NAME
    assert library.is_file()
    stamp = library.stat().st_mtime_ns
    assert ensure_ii_system(tmp_path) == root
    assert library.stat().st_mtime_ns == stamp
    assert [p.name for p in library.parent.iterdir()] == [LIBRARY_NAME]  # no temp files left


def test_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SIM_CACHE_DIR", str(tmp_path))
    assert ensure_ii_system().parent == tmp_path


def test_missing_compiler_is_a_clear_build_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="no C compiler found"):
        ensure_ii_system(tmp_path)
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(BuildError, match="CC='no-such-cc'"):
        ensure_ii_system(tmp_path)


def test_compiler_failure_carries_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fakecc"
    fake.write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'boom: broken' >&2\nexit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(BuildError, match="boom: broken") as info:
        ensure_ii_system(tmp_path / "cache")
    assert "exit 3" in str(info.value)
    assert not any(p.name.startswith(".libiiapi") for p in (tmp_path / "cache").rglob("*"))
    assert os.environ["II_SYSTEM"]  # the session's simulator stays in place
