"""Render query results as a table, CSV or JSON (one object per row, in a list).

NULL and the empty string stay apart: a table shows NULL as ``NULL``; CSV leaves a NULL
field empty and quotes an empty string (``""``). Lists, structs and maps are JSON text in a
table or CSV, as they are JSON values in JSON.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import duckdb

NULL = "NULL"
CELL = 60  # the widest a table cell is printed (the rest is cut, marked …)


def render(rel: duckdb.DuckDBPyRelation, fmt: str, json_values: bool = False) -> str:
    """``json_values``: in JSON, a column of SQL type JSON (``versions.detail``) is its
    value (an object), not its text."""
    cols = list(rel.columns)
    rows = rel.fetchall()
    if fmt == "json":
        parsed = [i for i, t in enumerate(rel.types) if json_values and str(t) == "JSON"]
        if parsed:
            rows = [tuple(json.loads(v) if i in parsed and v is not None else v
                          for i, v in enumerate(r)) for r in rows]
        return json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=_plain)
    if fmt == "csv":
        return "\n".join(",".join(_csv(v) for v in r) for r in [cols, *rows])
    return _table(cols, rows)


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, Decimal):  # SQL's DECIMAL (sum of a decimal column): a JSON number
        return float(v)
    return str(v) if not isinstance(v, (list, dict)) else v


def _text(v: Any) -> str:
    """A non-NULL value as one cell's text."""
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=_plain, ensure_ascii=False)
    return str(v)


def _csv(v: Any) -> str:
    """A CSV field (RFC 4180): empty for NULL, quoted when empty or holding , " or a line
    break."""
    if v is None:
        return ""
    if isinstance(v, bool):  # as SQL and JSON write them, not Python's True
        return "true" if v else "false"
    text = _plain(v) if hasattr(v, "isoformat") else _text(v)
    if text == "" or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _table(cols: list[str], rows: list[tuple]) -> str:
    if len(cols) == 1 and len(rows) == 1:  # a scalar prints bare: `lake sql "select count(*)
        v = rows[0][0]                     # from trajectories"` -> 240
        return NULL if v is None else _text(v)
    cells = [[(NULL if v is None else _text(v)) for v in r] for r in rows]
    widths = [min(CELL, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(cols)]
    cut = False

    def fit(v: str) -> str:
        nonlocal cut
        if len(v) <= CELL:
            return v
        cut = True
        return v[:CELL - 1] + "…"

    def line(vals: list[str]) -> str:
        return "  ".join(fit(v).ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
               + (f"; values over {CELL} characters cut at …: --format csv or json shows them "
                  "whole)" if cut else ")"))
    return "\n".join(out)
