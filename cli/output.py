"""Render query results as a table, CSV or JSON (one object per row, in a list)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import duckdb


def render(rel: duckdb.DuckDBPyRelation, fmt: str) -> str:
    cols = list(rel.columns)
    rows = rel.fetchall()
    if fmt == "json":
        return json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=_plain)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([[_plain(v) if not isinstance(v, (int, float, str)) else v for v in r]
                      for r in rows])
        return buf.getvalue().rstrip("\n")
    return _table(cols, rows)


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v) if not isinstance(v, (list, dict)) else v


def _table(cols: list[str], rows: list[tuple]) -> str:
    if len(cols) == 1 and len(rows) == 1:
        return str(rows[0][0])  # a scalar prints bare: `lake sql "select count(*) ..."` -> 240
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(cols)]
    def line(vals: list[str]) -> str:
        return "  ".join(v[:60].ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
