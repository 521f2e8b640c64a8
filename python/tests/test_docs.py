"""docs/python.md runs as written: its ```python blocks, in order, in one
namespace, as a notebook would run them."""

import os
import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python.md"


def blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_walk_through_runs(emstream_bin, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    pytest.importorskip("river")
    code = blocks(PAGE.read_text())
    assert len(code) >= 6, "the walk-through's blocks are ```python blocks"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.path.dirname(emstream_bin) + os.pathsep + os.environ["PATH"])
    namespace = {"__name__": "walk_through"}
    for i, block in enumerate(code):
        exec(compile(block, f"{PAGE.name} block {i + 1}", "exec"), namespace)
    assert (tmp_path / "ellipses.png").stat().st_size > 1000
    assert (tmp_path / "from-python.ckpt").is_file()
