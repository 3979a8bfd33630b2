"""Plain-text tables for the CLI: aligned columns, numbers to the right, long cells cut short."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: Widest cell a table prints (``--json`` gives everything).
MAX_CELL = 60


def cell(value: Any, digits: int = 3) -> str:
    """One value as table text: floats to ``digits`` decimals, None as ``-``, lists and maps as
    compact JSON, anything longer than :data:`MAX_CELL` cut with an ellipsis."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.{digits}f}"
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """``rows`` under ``headers``, two spaces between columns; numeric columns right-aligned."""
    texts = [[cell(v, digits) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in texts]) for i, h in enumerate(headers)]
    right = [bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows)
             for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    return "\n".join(out + [line(r) for r in texts])
