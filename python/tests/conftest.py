"""Shared fixtures: the ``emstream`` program for the checkpoint tests."""

import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _find_binary():
    named = os.environ.get("EMSTREAM_BIN")
    if named:
        return named
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "emstream"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("emstream")


@pytest.fixture(scope="session")
def emstream_bin():
    """Path of the ``emstream`` program: ``$EMSTREAM_BIN`` (then it must
    exist), else the workspace's build, else the one on PATH; the tests
    that need it are skipped without one."""
    path = _find_binary()
    if path is None:
        pytest.skip("no emstream program: build it with `cargo build` or set EMSTREAM_BIN")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"EMSTREAM_BIN={path} is not an executable file")
    return path
