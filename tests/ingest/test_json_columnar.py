"""JSONL through the columnar door (ingest/json_columnar.py) lands what the per-line path does.

The oracle is ``records.normalize_line`` on each line. For every block ``read_block``
accepts, each row ``normalize_batch`` accepts must be accepted per line with the same
trajectory row (but the hash) and the same step rows and payloads, where JSON kept as text
(``meta``, ``attributes``) is compared as the JSON value it holds, with 1 and 1.0 told
apart (keys may come in another order). Lines are generated to hit what Arrow's reading
loses: missing keys, explicit nulls, whole numbers among floats, ISO-looking text, escaped
keys, text where an object belongs, blank lines and broken lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ingest import ingest_paths
from ingest.json_columnar import read_block
from ingest.readers import Reader, jsonl_blocks
from lake import Lake
from lake.columnar import DROP, normalize_batch
from lake.errors import InvalidArgument
from lake.records import Context, Record, normalize_line
from tests.lake.test_columnar import stored_steps

CTX = Context("default", 1_754_065_000_000_000, payload_limit=64, preview_chars=8)
EXAMPLES = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _canon(value: Any) -> Any:
    """JSON text as the value it holds, numbers' types kept (1 is not 1.0), keys sorted."""
    return None if value is None else orjson.dumps(orjson.loads(value),
                                                   option=orjson.OPT_SORT_KEYS)


def _row(rec: Record) -> tuple[dict, list[dict]]:
    traj = {k: v for k, v in rec.trajectory.items() if k != "_record_hash"}
    traj["meta"] = _canon(traj["meta"])
    steps = [{**s, "attributes": _canon(s["attributes"])} for s in stored_steps(rec)]
    return traj, steps


def agree(lines: list[bytes]) -> str:
    """Check one block; returns what happened to it (for the statistics)."""
    batch = read_block(b"\n".join(lines), len(lines), max(map(len, lines)))
    if batch is None:
        return "per line"
    res = normalize_batch(batch, CTX, DROP)
    assert sorted(res.rows + res.rest) == list(range(len(lines)))
    for row, rec in zip(res.rows, res.records, strict=True):
        try:
            want = normalize_line(lines[row], CTX)
        except InvalidArgument as e:
            raise AssertionError(f"line {row} accepted as Arrow, per line: {e}\n"
                                 f"{lines[row]!r}") from e
        got, exp = _row(rec), _row(want)
        assert got[0] == exp[0], ({k: (got[0][k], exp[0][k]) for k in exp[0]
                                   if got[0].get(k) != exp[0][k]}, lines[row])
        assert got[1] == exp[1], (got[1], exp[1], lines[row])
        assert rec.payloads == want.payloads
    return "columnar" if not res.rest else "mixed"


# -- lines ---------------------------------------------------------------------------------

NUM = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.0, 1e20, -1.5, 3.0, 2**60]))
SCALAR = st.one_of(st.none(), st.booleans(), NUM, st.sampled_from(
    ["x", "", "2025-08-01T16:16:37Z", "2025-08-01 16:16:37", "2025-08-01", "{\"a\": 1}"]))
KEYS = st.sampled_from(["a", "b", "name", "trial", "n_tool_calls", "tokens", "x y", "é"])
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=6)
# what Arrow reads faithfully: objects with the same keys, no nulls, no whole floats
CALM = st.recursive(st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, -1.5]),
                              st.sampled_from(["x", "", "é", 'q"'])),
                    lambda inner: st.one_of(st.lists(inner, max_size=2),
                                            st.fixed_dictionaries({"a": inner, "é": inner})),
                    max_leaves=4)


@st.composite
def step(draw: Any, i: int, calm: bool) -> dict:
    s: dict[str, Any] = {"index": i, "kind": draw(st.sampled_from(["llm", "tool", ""]))}
    for key, strat in (("name", st.one_of(st.none(), st.just("search"))),
                       ("input", st.one_of(st.just("q"), st.just("x" * 70), VALUE)),
                       ("output", st.one_of(st.just("ok"), st.none())),
                       ("started_at", st.sampled_from(["2025-08-01T16:16:37.5Z",
                                                       "2025-08-01T16:16:37Z", 12])),
                       ("latency_ms", NUM), ("duration_ms", NUM), ("tokens_prompt", NUM),
                       ("cost_usd", NUM), ("is_error", st.booleans()),
                       ("n_tool_calls", st.one_of(st.none(), st.integers(0, 3))),
                       ("tokens", NUM), ("extra", CALM if calm else VALUE),
                       ("attributes", st.one_of(st.dictionaries(KEYS, SCALAR, max_size=2),
                                                st.just("{\"a\": 1}")))):
        if draw(st.booleans()):
            s[key] = draw(strat)
    return s


@st.composite
def record(draw: Any, i: int, calm: bool) -> dict:
    r: dict[str, Any] = {"trajectory_id": f"t{i}", "task": draw(st.sampled_from(["do x", " "]))}
    n = draw(st.integers(0, 3))
    r["steps"] = [draw(step(j, calm)) for j in range(n)]
    for key, strat in (("outcome", st.fixed_dictionaries(
                           {"success": st.booleans()},
                           optional={"reward": NUM, "scores": st.dictionaries(
                               st.sampled_from(["f1", "acc"]), NUM, max_size=2),
                               "why": CALM if calm else VALUE})),
                       ("meta", CALM.map(lambda v: {"v": v}) if calm else st.one_of(
                           st.dictionaries(KEYS, VALUE, max_size=3), st.just("{\"a\": 1}"))),
                       ("source", CALM if calm else VALUE),
                       ("agent", st.one_of(st.none(), st.just("bot"))),
                       ("started_at", st.sampled_from(["2025-08-01T16:16:37.25Z",
                                                       "2025-08-01T16:16:37Z"])),
                       ("tags", st.lists(st.sampled_from(["a", "b"]), max_size=2))):
        if draw(st.booleans()):
            r[key] = draw(strat)
    return r


def _text(rec: dict, style: int) -> bytes:
    if style == 0:
        return orjson.dumps(rec)
    import json  # the standard library's spacing (": "), and \\u escapes for non-ASCII

    return json.dumps(rec).encode()


@st.composite
def blocks(draw: Any) -> list[bytes]:
    n = draw(st.integers(1, 6))
    style = draw(st.integers(0, 1))
    calm = draw(st.booleans())  # values Arrow reads faithfully (most lines of a real file)
    lines = [_text(draw(record(i, calm)), style) for i in range(n)]
    if draw(st.booleans()):  # a hazard: a broken line, or a line of another shape
        at = draw(st.integers(0, n - 1))
        lines[at] = draw(st.sampled_from([b"{not json", b"[1, 2]", b'{"task": 1}',
                                          b'{"task": "t", "a": 1, "a": 2}',
                                          b'{"task": "t", "steps": "no"}',
                                          b'{"task": "t", "n\\u0061me": null}']))
    return lines


@EXAMPLES
@given(blocks())
@example([b'{"trajectory_id":"t0","task":"do x","steps":[],"outcome":{"success":false}}',
          b'{"trajectory_id":"t1","task":"do x","steps":[],"outcome":{"why":[]}}'])
def test_jsonl_blocks_land_as_the_per_line_path_would(lines):
    event(agree(lines))


@pytest.mark.parametrize("escaped, plain", [
    (b'"n\\u0061me": null', b'"name": 1'),
    (b'"wh\\/y": null', b'"wh/y": 1'),
    (b'"outcome": {"success": true, "wh\\u0079": null}', b'"outcome": {"why": "a"}'),
])
def test_a_null_under_an_escaped_key_is_kept_as_the_line_has_it(escaped, plain):
    """Arrow reads ``"n\\u0061me"`` as ``name``: its null must not be dropped as missing."""
    lines = [b'{"trajectory_id": "t0", "task": "t", ' + escaped + b"}",
             b'{"trajectory_id": "t1", "task": "t", ' + plain + b"}"]
    assert agree(lines) == "per line"


def test_escaped_json_in_a_value_is_not_an_escaped_key():
    """Tool inputs hold JSON text: its escaped quotes, nulls and numbers are not keys, so a
    block with sparse fields (the scans run) still takes the columnar door."""
    arg = orjson.dumps(orjson.dumps({"k": None, "n": 3, "p": "C:\\"}).decode())
    lines = [b'{"trajectory_id": "t0", "task": "t", "source": "a", "steps": [{"kind": "tool", '
             b'"input": ' + arg + b'}]}',
             b'{"trajectory_id": "t1", "task": "t", "steps": []}']  # no source: a null
    assert b"\\" in arg and agree(lines) == "columnar"


def test_a_whole_number_under_an_escaped_key_is_kept_as_written():
    lines = [b'{"trajectory_id": "t0", "task": "t", "sc\\u006fre": 3}',  # Arrow: 3.0
             b'{"trajectory_id": "t1", "task": "t", "score": 1.5}']
    assert agree(lines) == "per line"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({
    "trajectory_id": st.uuids().map(str), "task": st.just("book a flight"),
    "steps": st.lists(st.fixed_dictionaries(
        {"kind": st.just("tool"), "name": st.sampled_from(["search", "book"]),
         "input": st.just("{}"), "latency_ms": st.floats(0.5, 9e3).filter(lambda x: x % 1),
         "cost_usd": st.floats(0, 1)},
        optional={"n_tool_calls": st.integers(0, 4)}), max_size=4),
    "meta": st.fixed_dictionaries({"trial": st.integers(0, 9), "domain": st.just("air")})}),
    min_size=1, max_size=8))
def test_the_common_shapes_take_the_columnar_door(records):
    lines = [orjson.dumps({**r, "steps": [{**s, "index": i} for i, s in enumerate(r["steps"])]})
             for r in records]
    assert agree(lines) == "columnar"


def test_dev_and_synthetic_files_land_the_same_either_way(tmp_path: Path, dev_records):
    from benchmarks import synth

    path = synth.ensure(20_000, 7, "jsonl")
    dev = tmp_path / "dev.jsonl"
    dev.write_bytes(b"\n".join(orjson.dumps(r) for r in dev_records) + b"\n\n")
    lines = [x for x in Path(path).read_bytes().splitlines() if x]
    assert agree(lines[:300]) == "columnar"  # the benchmark's file takes the fast door
    got = {}
    for columnar in (True, False):
        with Lake.open(str(tmp_path / f"lake-{columnar}")) as lake:
            s = ingest_paths(lake, [str(path), str(dev)], columnar=columnar, workers=0)
            assert s.rejected == 0
            got[columnar] = [
                [tuple(_canon(v) if c in ("meta", "attributes") else v
                       for c, v in zip(rel.columns, row, strict=True))
                 for row in rel.fetchall()]
                for rel in (lake.sql("select * exclude (ingested_at) from "
                                     "trajectories order by trajectory_id"),
                            lake.sql('select * from steps order by trajectory_id, "index"'))]
    assert got[True] == got[False]


@pytest.mark.parametrize("gz", [False, True])
def test_blocks_keep_line_numbers_across_blank_lines(tmp_path: Path, gz: bool):
    import gzip

    text = b'{"task": "a"}\n\n  \n{"task": "b"}\r\n{"task": "c"}'  # no final newline
    path = tmp_path / ("x.jsonl.gz" if gz else "x.jsonl")
    path.write_bytes(gzip.compress(text) if gz else text)
    got = [(i.location.rsplit(":", 1)[1], i.raw)
           for b in jsonl_blocks(Reader(path), 8) for i in b.items]
    assert got == [("1", b'{"task": "a"}'), ("4", b'{"task": "b"}'), ("5", b'{"task": "c"}')]
