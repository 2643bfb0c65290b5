"""Validate a whole Arrow batch of records at once: the columnar door for Arrow input.

Parquet and Arrow IPC files, ``IngestArrow`` messages, and blocks of JSONL lines that
Arrow reads faithfully (``ingest/json_columnar.py``) hold records one per row
(``docs/format.md``). ``normalize_batch`` checks every field of every row and step with
vectorised Arrow / numpy operations that implement the rules of ``lake/records.py`` (the
readers are in ``lake/arrow_values.py``); only what is free-form (``meta``, unknown fields,
scores, tags) and the task hash are made one row at a time, with ``records``' own code. It
returns ``Record``\\ s whose steps are slices of one ``steps`` table, and the rows it leaves
to the per-row validator (``records.normalize``): every row that breaks a rule, so a bad
row is rejected with the usual message, and the rows it does not read (below).

How an Arrow row reads as a record (``nulls``): ``KEEP`` (files) reads a null as a field
set to null, as ``to_pylist`` does (an unknown null field is kept, as null); ``DROP``
(``IngestArrow``) drops the null fields of the row, of its outcome and of its steps, and
reads ``meta`` / ``attributes`` text starting with ``{`` as the JSON object it holds.

Covered: every known field in any Arrow type the rules accept (text; whole numbers and
numbers of any integer or float type; booleans; timestamps in s, ms or us, naive or UTC;
epoch seconds; ISO 8601 text ``YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+00:00]``), aliases,
``is_error``, ``attributes`` (struct, map, or JSON text for IPC), unknown fields of any type
``arrow_values.values`` converts, large payloads. Left to the per-row validator: rows
without a ``trajectory_id`` (their id is the hash of their JSON text), rows with a time in
another text form, a value of another type (decimal, date, binary...), or a map with a
repeated key. A NaN or an infinity where the format wants a number (``reward``, a score, a
step's ``duration_ms``...) breaks the rule, so its row is left there too, and rejected by
name (``arrow_values.unwritten``); in free-form fields and text it is null, as JSON writes it.

The records are logged as rows (``lake/row_log.py``), which also gives them their
``_record_hash``: a hash of their rows, not of a JSON text.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt

from . import arrow_values as av
from .errors import InvalidArgument
from .records import (
    OUTCOME_FIELDS,
    STEP_ALIASES,
    STEP_FIELDS,
    TRAJECTORY_FIELDS,
    Context,
    Record,
    _meta,
    _scores,
    _tags,
    keep_field,
    task_hash,
)
from .schema import STATUSES, STEPS, TRAJECTORIES, TS

log = logging.getLogger(__name__)
KEEP, DROP = "keep", "drop"
_MAX_I63 = (1 << 63) - 1
# what str.strip() strips (str.isspace, tests/lake/test_columnar.py checks): blank text
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
              "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_BLANK = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]*$"


@dataclass
class Batch:
    """``records`` made from batch ``rows`` (ascending), their steps ``steps`` in order
    (each record's steps are a slice of it); ``rest``: rows for ``records.normalize``."""

    rows: list[int]
    records: list[Record]
    steps: pa.Table
    rest: list[int]


def normalize_batch(batch: pa.RecordBatch, ctx: Context, nulls: str = KEEP) -> Batch:
    """Validate the rows of ``batch`` this module reads (see the module docstring); the
    others are left in ``rest``: all of them if the batch holds something unexpected."""
    names = batch.schema.names
    if len(set(names)) == len(names):  # a repeated column: to_pylist keeps the last
        try:
            return _normalize(batch, ctx, nulls)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
            # text that is not UTF-8 is the input's fault, reported per row: not worth a warning
            (log.debug if isinstance(e, UnicodeDecodeError) else log.warning)(
                "columnar validation of a batch failed (%s: %s); validating its rows one by "
                "one", type(e).__name__, e)
    return Batch([], [], STEPS.empty_table(), list(range(batch.num_rows)))


def _normalize(batch: pa.RecordBatch, ctx: Context, nulls: str) -> Batch:
    n = batch.num_rows
    cols = dict(zip(batch.schema.names, batch.columns, strict=True))
    bad = np.zeros(n, bool)
    steps = _Steps(cols.get("steps"), n, ctx, nulls, bad)
    trajs, rows = _Rows(cols, n, ctx, nulls, bad).trajectories(steps)
    table = steps.table(~bad, [t["trajectory_id"] for t in trajs])
    lengths = np.array([t["n_steps"] for t in trajs], np.int64)
    starts = (np.cumsum(lengths) - lengths).tolist()
    records: list[Record] = [_Sliced(t, steps.payloads.get(i, []), (table, off))
                             for t, i, off in zip(trajs, rows, starts, strict=True)]
    return Batch(rows, records, table, np.flatnonzero(bad).tolist())


class _Sliced(Record):
    """A record whose steps are its ``n_steps`` rows of ``source`` from its offset. The
    slice is made when read: the writer and the log take neighbouring records' steps as one
    slice of ``source``, so most never are (a slice per record: ~0.1 s per 1M steps)."""

    def __init__(self, trajectory: dict[str, Any], payloads: list[dict[str, Any]],
                 source: tuple[pa.Table, int]):
        self.trajectory, self.payloads, self.source = trajectory, payloads, source

    @property  # type: ignore[override]
    def steps(self) -> pa.Table:
        table, off = self.source
        return table.slice(off, self.trajectory["n_steps"])


# -- the rows' own fields ------------------------------------------------------------------

class _Rows:
    """The trajectory fields of every row, checked column by column; ``bad`` marks rows
    that break a rule (or that this module does not read)."""

    def __init__(self, cols: dict[str, pa.Array], n: int, ctx: Context, nulls: str,
                 bad: np.ndarray):
        self.cols, self.n, self.ctx, self.nulls, self.bad = cols, n, ctx, nulls, bad
        get = cols.get
        tenant = self.check(av.strings(get("tenant"), n))
        bad |= av.mask(pc.not_equal(tenant, ctx.tenant))
        self.task = self.required(get("task"))
        self.tid = self.required(get("trajectory_id"))  # none: its id is its JSON's hash
        out = get("outcome")
        self.outcome: dict[str, pa.Array] = {}
        self.outcome_valid = np.zeros(n, bool)
        if out is not None and not pt.is_null(out.type):
            names = [f.name for f in out.type] if pt.is_struct(out.type) else []
            if not pt.is_struct(out.type) or len(set(names)) != len(names):
                bad |= av.valid(out)  # outcome must be an object
            else:
                self.outcome = dict(zip(names, out.flatten(), strict=True))
                self.outcome_valid = av.valid(out)
        self.success = self.either(av.booleans, "success")
        self.reward = self.either(av.numbers, "reward")
        status = self.check(av.strings(get("status"), n))
        bad |= av.valid(status) & ~av.mask(pc.is_in(status, pa.array(STATUSES)))
        derived = pc.if_else(self.success, "succeeded", "failed")
        self.status = pc.coalesce(status, derived, "running")
        self.fork_step = self.check(av.whole(get("fork_step"), n, 31))
        self.times = {k: self.check(av.times(get(k), n))
                      for k in ("started_at", "ended_at", "expires_at")}
        early = pc.less(self.times["ended_at"], self.times["started_at"])  # records: refused
        self.bad |= av.mask(early)
        self.strs = {k: self.check(av.strings(get(k), n)) for k in
                     ("agent", "agent_version", "model", "session_id", "on_behalf_of",
                      "parent_id")}
        self.given = {"tokens_in": self.check(av.whole(get("tokens_in"), n)),
                      "tokens_out": self.check(av.whole(get("tokens_out"), n)),
                      "cost_usd": self.check(av.numbers(get("cost_usd"), n))}

    def check(self, read: tuple[pa.Array, np.ndarray]) -> pa.Array:
        values, wrong = read
        self.bad |= wrong
        return values

    def required(self, arr: pa.Array | None) -> pa.Array:
        """Text that must be there and not blank."""
        values = self.check(av.strings(arr, self.n))
        self.bad |= ~av.valid(values) | av.mask(pc.match_substring_regex(values, _BLANK))
        return values

    def either(self, read: Any, name: str) -> pa.Array:
        """``outcome.<name>``, else the top-level field (read only where the first is null)."""
        first = self.check(read(self.outcome.get(name), self.n))
        second, wrong = read(self.cols.get(name), self.n)
        self.bad |= wrong & ~av.valid(first)
        return pc.coalesce(first, second)

    # -- per row: free-form fields, totals, the trajectory row ---------------------------
    def trajectories(self, steps: _Steps) -> tuple[list[dict[str, Any]], list[int]]:
        """The trajectory rows of the rows that keep to every rule, and which rows they are."""
        bad, ctx = self.bad, self.ctx
        metas = self._meta_texts()
        free = self._free(metas is None)
        totals = steps.totals({k: v.to_pylist() for k, v in self.given.items()}, bad)
        rows = np.flatnonzero(~bad).tolist()
        meta = metas.to_pylist() if metas is not None else [None] * self.n
        scores, tags = [None] * self.n, free.tags
        for i in rows:  # the free-form fields, checked by records' own readers
            try:
                if metas is None:
                    obj = _meta(*free.meta(i))
                    meta_text = orjson.dumps(obj).decode() if obj else None
                scores[i] = _scores(*free.scores(i))
                if not free.tags_ok:
                    _tags(tags[i])
            except InvalidArgument:
                bad[i] = True
                continue
            if metas is None:
                meta[i] = meta_text
        rows = [i for i in rows if not bad[i]]
        take = pa.array(rows, pa.int64())
        col = {k: v.take(take).to_pylist() for k, v in (
            ("trajectory_id", self.tid), ("task", self.task), ("status", self.status),
            ("fork_step", self.fork_step), ("success", self.success),
            ("reward", self.reward), *self.strs.items(), *self.times.items())}
        col.update({k: [v[i] for i in rows] for k, v in (("scores", scores), ("tags", tags),
                                                       ("meta", meta), *totals.items())})
        col["task_hash"] = [task_hash(t) for t in col["task"]]
        col["n_steps"] = steps.lengths[rows].tolist()
        fixed = {"tenant": ctx.tenant, "ingested_at": ctx.ingested_at_us, "retracted_at": None,
                 "retract_reason": None, "_record_hash": None}
        names = TRAJECTORIES.names
        values = [col[k] if k in col else [fixed[k]] * len(rows) for k in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)], rows

    def _meta_texts(self) -> pa.Array | None:
        """``meta`` JSON text of every row, made column by column when ``meta`` is an object
        with fixed fields (a struct) and no unknown field takes a name it has (``keep_field``
        would move it under ``_fields``). None: made row by row (``records._meta``)."""
        meta = self.cols.get("meta")
        fields: list[tuple[str, pa.Array, np.ndarray]] = []
        if meta is not None and not pt.is_null(meta.type):
            if not pt.is_struct(meta.type):
                return None
            here = av.valid(meta)
            fields += [(f.name, child, here) for f, child in zip(meta.type, meta.flatten(),
                                                                 strict=True)]
        fields += [(name, arr, self._present(arr)) for name, arr in self.cols.items()
                   if name not in TRAJECTORY_FIELDS]
        fields += [(f"outcome.{name}", arr, self.outcome_valid & self._present(arr))
                   for name, arr in self.outcome.items() if name not in OUTCOME_FIELDS]
        names = [name for name, _, _ in fields]
        if len(set(names)) != len(names) or "_fields" in names:
            return None
        return av.json_objects(
            [(name, pc.fill_null(self.check(av.json_texts(arr, self.n)), "null"), here)
             for name, arr, here in fields], self.n)

    def _free(self, meta: bool) -> _Free:
        """Python values of the free-form fields (scores, tags; ``meta``: meta and unknown
        fields too)."""
        free = _Free(self.n, self.nulls)
        for name, arr in self.cols.items():
            if meta and (name == "meta" or name not in TRAJECTORY_FIELDS):
                vals = free.read(arr, self.bad)
                if name == "meta":
                    free.meta_values = ([_parse_object(v) for v in vals] if self.nulls == DROP
                                        else vals)
                else:
                    free.unknown.append((name, vals, self._present(arr)))
        for name, arr in self.outcome.items():
            if meta and name not in OUTCOME_FIELDS:
                free.outcome.append((name, free.read(arr, self.bad), self._present(arr)))
        free.outcome_valid = self.outcome_valid
        if "scores" in self.outcome:
            free.scores_of = (free.read(self.outcome["scores"], self.bad), "outcome.scores")
            free.scores_here = self.outcome_valid & self._present(self.outcome["scores"])
        free.top_scores = (free.read(self.cols.get("scores"), self.bad), "scores")
        tags = self.cols.get("tags")
        free.tags = free.read(tags, self.bad)
        free.tags_ok = tags is None or pt.is_null(tags.type) or (
            (pt.is_list(tags.type) or pt.is_large_list(tags.type))
            and av.is_str(tags.type.value_type) and pc.list_flatten(tags).null_count == 0)
        return free

    def _present(self, arr: pa.Array) -> np.ndarray:
        return av.valid(arr) if self.nulls == DROP else np.ones(self.n, bool)


class _Free:
    """Free-form values, row by row, shaped for ``records``' ``_meta`` / ``_scores``."""

    def __init__(self, n: int, nulls: str):
        self.n, self.nulls = n, nulls
        self.meta_values: list = [None] * n
        self.unknown: list[tuple[str, list, np.ndarray]] = []
        self.outcome: list[tuple[str, list, np.ndarray]] = []
        self.outcome_valid = np.zeros(n, bool)
        self.scores_of: tuple[list, str] | None = None  # outcome.scores, where scores_here
        self.scores_here = np.zeros(n, bool)
        self.top_scores: tuple[list, str] = ([None] * n, "scores")
        self.tags: list = [None] * n
        self.tags_ok = True  # every row's tags are a list of text (or null)

    def read(self, arr: pa.Array | None, bad: np.ndarray) -> list:
        if arr is None:
            return [None] * self.n
        try:
            return av.values(arr)
        except av.Fallback:
            bad |= av.valid(arr)
            return [None] * self.n

    def meta(self, i: int) -> tuple[dict, dict]:
        obj = {"meta": self.meta_values[i]}
        for name, vals, present in self.unknown:
            if present[i]:
                obj[name] = vals[i]
        outcome = ({name: vals[i] for name, vals, present in self.outcome if present[i]}
                   if self.outcome_valid[i] else {})
        return obj, outcome

    def scores(self, i: int) -> tuple[Any, str]:
        """The scores the row's record reads, and their path (a NaN or an infinity in them
        is not a score: ``_scores`` rejects it)."""
        vals, path = (self.scores_of if self.scores_of is not None and self.scores_here[i]
                      else self.top_scores)
        return vals[i], path


def _ordered_sums(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per segment, x[start] + x[start + 1] + ... in that order (a null is 0.0 here: adding
    it leaves any sum but -0.0 as it is, and a sum from 0.0 is never -0.0)."""
    acc = np.zeros(len(starts))
    longest = int(lengths.max()) if len(lengths) else 0
    with np.errstate(over="ignore"):  # a sum to infinity is the caller's to judge (bad)
        for j in range(longest):
            live = np.flatnonzero(lengths > j)
            acc[live] += x[starts[live] + j]
    return acc


def _parse_object(v: Any) -> Any:
    """IngestArrow: a text ``meta`` / ``attributes`` holding a JSON object is that object."""
    if isinstance(v, str) and v.lstrip().startswith("{"):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            pass
    return v


# -- the steps -------------------------------------------------------------------------------

class _Steps:
    """The steps of every row, flattened and checked column by column. A row with a step
    that breaks a rule (or holds a value this module does not read) is marked in ``bad``."""

    def __init__(self, col: pa.Array | None, n: int, ctx: Context, nulls: str,
                 bad: np.ndarray):
        self.n, self.ctx, self.nulls = n, ctx, nulls
        self.payloads: dict[int, list[dict]] = {}
        self.lengths = np.zeros(n, np.int64)
        self.starts = np.zeros(n, np.int64)
        self.cols: dict[str, pa.Array] = {}
        self.m = 0
        if col is None or pt.is_null(col.type):
            return
        t = col.type
        if not (pt.is_list(t) or pt.is_large_list(t)):
            bad |= av.valid(col)  # steps must be a list
            return
        lengths = av.num(pc.list_value_length(col), 0).astype(np.int64)
        v = t.value_type
        names = [f.name for f in v] if pt.is_struct(v) else []
        if not pt.is_struct(v) or len(set(names)) != len(names):
            bad |= lengths > 0  # a step must be an object
            return
        flat = pc.list_flatten(col)
        self.lengths, self.m = lengths, len(flat)
        self.starts = np.cumsum(lengths) - lengths
        self.parent = np.repeat(np.arange(n), lengths)
        self.pos = np.arange(self.m) - self.starts[self.parent]
        self.wrong = ~av.valid(flat)  # a null step
        self._read(dict(zip(names, flat.flatten(), strict=True)))
        bad |= np.bincount(self.parent[self.wrong], minlength=n) > 0

    def span(self, i: int) -> tuple[int, int]:
        a = int(self.starts[i])
        return a, a + int(self.lengths[i])

    def totals(self, given: dict[str, list], bad: np.ndarray) -> dict[str, list]:
        """Per row: the given ``tokens_in`` / ``tokens_out`` / ``cost_usd``, else the sum of
        its steps' values (None when they have none); a sum past int64 or to infinity marks
        the row ``bad``. Floats are added in step order, as Python's ``sum`` does."""
        out = {}
        for key, want in given.items():
            col = self.cols.get(key)
            if col is None or not self.m:
                out[key] = want
                continue
            has = av.valid(col)
            count = np.bincount(self.parent, weights=has, minlength=self.n)
            x = av.num(col, 0)
            if pt.is_integer(col.type):
                cs = np.concatenate(([0], np.cumsum(x)))  # wraps: a difference below 2**63 is exact
                total = cs[self.starts + self.lengths] - cs[self.starts]
                big = np.bincount(self.parent, weights=x.astype(np.float64), minlength=self.n)
                for i in np.flatnonzero(big > 2.0 ** 62):  # a sum that may not fit: exactly
                    a, b = self.span(int(i))
                    exact = sum(v for v in col.slice(a, b - a).to_pylist() if v is not None)
                    bad[i] |= exact > _MAX_I63
                    total[i] = min(exact, _MAX_I63)
            else:
                total = _ordered_sums(x, self.starts, self.lengths)
                bad |= (count > 0) & ~np.isfinite(total)
            sums = total.tolist()
            out[key] = [w if w is not None else (t if c else None)
                        for w, t, c in zip(want, sums, count.tolist(), strict=True)]
        return out

    def check(self, read: tuple[pa.Array, np.ndarray]) -> pa.Array:
        values, wrong = read
        self.wrong |= wrong
        return values

    def _read(self, fields: dict[str, pa.Array]) -> None:
        m, c, get = self.m, self.cols, fields.get
        present = {k: (av.valid(a) if self.nulls == DROP else np.ones(m, bool))
                   for k, a in fields.items()}
        c["kind"] = self.check(av.strings(get("kind"), m))
        self.wrong |= ~av.valid(c["kind"]) | av.mask(pc.equal(c["kind"], ""))  # required
        index = self.check(av.whole(get("index"), m, 31))
        index = np.where(av.valid(index), av.num(index, 0), self.pos)
        self._unique(index)
        c["index"] = pa.array(index, pa.int32())
        for name in ("step_id", "parent_step_id", "name", "actor"):
            c[name] = self.check(av.strings(get(name), m))
        if c["step_id"].null_count == m:  # none given: the index
            c["step_id"] = c["index"].cast(pa.string())
        else:
            c["step_id"] = pc.if_else(av.mask(pc.not_equal(c["step_id"], "")), c["step_id"],
                                      c["index"].cast(pa.string()))
        for name in ("input", "output", "error"):
            c[name] = self.check(av.texts(get(name), m))
        is_error = get("is_error")
        if is_error is not None and pt.is_boolean(is_error.type):  # error: the output, if any
            on = av.mask(is_error) & ~av.valid(c["error"])
            if on.any():  # (only those rows: outputs are the big texts)
                output = c["output"].filter(on)
                fill = pc.if_else(av.mask(pc.not_equal(output, "")), output, "error")
                c["error"] = pc.replace_with_mask(c["error"], on, fill)
        c["started_at"] = self.check(av.times(get("started_at"), m))
        taken = self._aliases(fields, present)
        c["cost_usd"] = self.check(av.numbers(get("cost_usd"), m, nonneg=True))
        self._payloads()
        self._attributes(fields, present, taken)

    def _aliases(self, fields: dict[str, pa.Array], present: dict) -> dict[str, np.ndarray]:
        """duration_ms, tokens_in, tokens_out: where the field is null, the first alias
        present (in field order) stands in. Returns where each alias was taken."""
        taken = {}
        for canon in ("duration_ms", "tokens_in", "tokens_out"):

            def read(arr: pa.Array | None, canon: str = canon) -> tuple[pa.Array, np.ndarray]:
                return (av.numbers(arr, self.m, nonneg=True) if canon == "duration_ms"
                        else av.whole(arr, self.m))

            value = self.check(read(fields.get(canon)))
            free = ~av.valid(value)
            for name, arr in fields.items():
                if STEP_ALIASES.get(name) == canon:
                    took = free & present[name]
                    if took.any():
                        alias, wrong = read(arr)
                        self.wrong |= wrong & took  # an alias not taken is an attribute
                        value = pc.if_else(took, alias, value)
                    free &= ~took
                    taken[name] = took
            self.cols[canon] = value
        return taken

    def _attributes(self, fields: dict[str, pa.Array], present: dict,
                    taken: dict[str, np.ndarray]) -> None:
        """``attributes`` plus every unknown field, as JSON text (``records._step``)."""
        m, members, extra = self.m, [], []
        for name, arr in fields.items():
            if name in STEP_FIELDS:
                continue
            here = present[name] & ~taken.get(name, np.zeros(m, bool))
            if not here.any():
                continue
            text = self.check(av.json_texts(arr, m))
            if self.nulls == KEEP:
                text = pc.fill_null(text, "null")
            members.append((name, text, here))
            extra.append((name, arr, here))
        attrs = av.json_objects(members, m)
        given = fields.get("attributes")
        if given is not None and not pt.is_null(given.type):
            attrs = self._merge(given, attrs, extra)
        self.cols["attributes"] = attrs

    def _merge(self, given: pa.Array, attrs: pa.Array, extra: list) -> pa.Array:
        """Steps with an ``attributes`` object: merged with their unknown fields in Python
        (``keep_field`` keeps a name the object already has under ``_fields``)."""
        where = np.flatnonzero(av.valid(given) & ~self.wrong)
        if not len(where):
            return attrs
        take = pa.array(where)
        try:
            objs = av.values(given.take(take))
            more = [(name, av.values(arr.take(take)), here[where]) for name, arr, here in extra]
        except av.Fallback:
            self.wrong |= av.at(self.m, where)
            return attrs
        texts: list[str | None] = []
        for j, obj in enumerate(objs):
            obj = _parse_object(obj) if self.nulls == DROP else obj
            if not isinstance(obj, dict):
                self.wrong[where[j]] = True  # attributes must be an object
                texts.append(None)
                continue
            bag = dict(obj)
            for name, vals, here in more:
                if here[j]:
                    keep_field(bag, name, vals[j])
            texts.append(orjson.dumps(bag).decode() if bag else None)
        return pc.replace_with_mask(attrs, av.at(self.m, where), pa.array(texts, pa.string()))

    def _payloads(self) -> None:
        """An input / output over the payload limit is stored once in ``payloads``; the
        step keeps a preview and the reference (``records._step``)."""
        c, ctx = self.cols, self.ctx
        found: list[tuple[int, int, dict]] = []
        for order, col in enumerate(("input", "output")):
            c[f"{col}_ref"] = pa.nulls(self.m, pa.string())
            over = av.mask(pc.greater(pc.binary_length(c[col]), ctx.payload_limit))
            over &= ~self.wrong
            if not over.any():
                continue
            previews, refs = [], []
            for j, text in zip(np.flatnonzero(over), c[col].filter(over).to_pylist(),
                               strict=True):
                data = text.encode()
                sha = hashlib.sha256(data).hexdigest()
                found.append((int(j), order, {"tenant": ctx.tenant, "sha256": sha,
                                              "size": len(data), "data": text}))
                previews.append(text[: ctx.preview_chars])
                refs.append(sha)
            c[col] = pc.replace_with_mask(c[col], over, pa.array(previews, pa.string()))
            c[f"{col}_ref"] = pc.replace_with_mask(c[f"{col}_ref"], over,
                                                   pa.array(refs, pa.string()))
        for j, _order, p in sorted(found, key=lambda x: (x[0], x[1])):
            self.payloads.setdefault(int(self.parent[j]), []).append(p)

    def _unique(self, index: np.ndarray) -> None:
        """Step indexes are unique within a trajectory."""
        key = self.parent.astype(np.int64) * (1 << 32) + index
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
        self.wrong[order[1:][same]] = True

    def table(self, keep_rows: np.ndarray, tids: list[str]) -> pa.Table:
        """The steps of the rows kept, as a ``steps`` table (``tids``: their ids)."""
        if not self.m or not tids:
            return STEPS.empty_table()
        keep = keep_rows[self.parent]
        k = int(keep.sum())
        c = (dict(self.cols) if k == self.m  # (a filter keeping every row still copies)
             else {name: v.filter(keep) for name, v in self.cols.items()})
        c["tenant"] = pa.array([self.ctx.tenant], pa.string()).take(np.zeros(k, np.int64))
        c["trajectory_id"] = pa.array(tids, pa.string()).take(
            np.repeat(np.arange(len(tids)), self.lengths[keep_rows]))
        c["started_at"] = c["started_at"].cast(TS)
        return pa.table([c[f.name].cast(f.type) for f in STEPS], schema=STEPS)
