"""The CLI's plain-text tables and ``--param`` parsing."""

from __future__ import annotations

import pytest

from api.cli.stored import _params
from api.cli.tables import MAX_CELL, cell, table


def test_table_aligns_numbers_right_and_text_left():
    text = table(["name", "n", "x"], [["a0.h1", 3, 0.5], ["logits", 12, None]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "n", "x"]
    assert lines[2].startswith("a0.h1 ") and lines[2].endswith("0.500")
    assert lines[3].endswith("-") and " 12 " in lines[3]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule line up


def test_cells_are_short_and_single_line():
    assert cell(None) == "-" and cell(True) == "true" and cell(1 / 3) == "0.333"
    assert cell({"a": [1, 2]}) == '{"a":[1,2]}'
    long = cell("x" * 500 + "\nmore")
    assert len(long) == MAX_CELL and long.endswith("…") and "\n" not in long


def test_params_read_json_else_text():
    assert _params(["x=0.9", "n=3", "ids=[\"a\",\"b\"]", "flag=true", "name=multitask",
                    "q=a=b"]) == {"x": 0.9, "n": 3, "ids": ["a", "b"], "flag": True,
                                  "name": "multitask", "q": "a=b"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        _params(["novalue"])
