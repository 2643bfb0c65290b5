"""The semantic cache's verdict on one (query, cached candidate) pair, and its calibration.

``decide(query_text, candidate_text, cosine, threshold)`` returns a ``Verdict``:

``exact``    same task text after ``records.normalize_task`` (NFKC, casefold, whitespace
             collapsed), whatever the cosine.
``hit``      a near-duplicate safe to reuse as is: ``cosine >= threshold`` AND equal slots
             (``slots.compare``: numbers, dates, ids, emails, quoted strings, names, actions,
             comparatives, rankings; no negation or role conflict) AND no content word swapped
             in place (``wording_differences``: "mention the robotic one" vs "... the canister
             one").
``similar``  related: adapt it, do not replay it: ``cosine >= SIMILAR_MIN`` and not a hit. The
             reason names the first slot that differs, or the cosine shortfall.
``miss``     ``cosine < SIMILAR_MIN``.

Over a query's neighbours (``of_neighbors``, what the cache answers), the verdict is about
the best one, with two outcome rules: runs of the query's own text come first, a successful
one first, and the answer is ``exact`` unless none of them succeeded and one failed: then
``similar`` ("the same task failed every time it was run (5 run(s)): adapt it, do not replay
it"); runs whose outcome is unknown are not held against it (all unknown: ``exact``). A
``hit`` whose neighbour failed is ``similar`` too. A vector query (no text) is ``similar``
at best.

Both conditions are needed: all-MiniLM-L6-v2 puts "book a flight NYC to SF" and "... SF to
NYC" at ~0.99, so no cosine threshold separates them; and slot-free texts ("tell me a joke",
"what's the weather") have equal (empty) slots, so slots alone cannot decide either.

Constants, measured with ``python -m benchmarks.bench_verdicts`` on the calibration half of
``/work/shared/data/dev/pairs.jsonl`` (numbers in benchmarks/RESULTS.md):

``DEFAULT_THRESHOLD = 0.95``  the safe global default, for a cluster without enough evidence.
    ``calibrate`` run from 0.95 (the strict end of common practice, Portkey) on each source of
    the calibration half: tau-bench tasks would go down to 0.80, but MRPC news sentences, which
    carry few slots, keep 0.95 (no lower threshold has its slot-gated false-hit rate under 1%
    with 95% confidence). The default is the stricter of the two.
``MIN_THRESHOLD = 0.80``      no calibration goes below it, however clean the evidence (0.80 is
    GPTCache's default, the loose end of common practice).
``SIMILAR_MIN = 0.50``        below it, ``miss``. Unrelated sentences (random MRPC pairs) stay
    under 0.48 in 99.9% of cases; every labelled duplicate in pairs.jsonl is above 0.6. Random
    pairs of *different* tau-bench retail tasks pass 0.5 a quarter of the time: another task
    of the same kind is a useful example to adapt, so ``similar`` is right for them.

Calibration rule (``calibrate``), per cluster, from labelled observations ``(cosine,
slots_equal, is_duplicate)`` (for the cache's feedback: ``is_duplicate`` = the reused
trajectory worked). A *false hit* at threshold t is a non-duplicate with equal slots and
``cosine >= t``; the false-hit rate is false hits over all non-duplicates of the cluster.

1. Start from the default (the global one, or the cluster's current threshold).
2. Raise on any evidence: if the observed false-hit rate at the default is above the target
   (1%), move up to the lowest threshold on a 0.01 grid where it is not. Up is the safe way.
3. Lower only on enough evidence: with at least ``min_negatives`` (100) non-duplicates, move
   down to the lowest grid threshold, not below ``MIN_THRESHOLD``, whose false-hit rate is below
   the target with 95% confidence (one-sided Jeffreys upper bound, Beta(k+1/2, n-k+1/2)), and
   only if that makes at least one more labelled duplicate a hit. For a 1% target that takes
   191 non-duplicates with no false hit, or 390 with one.
4. Otherwise keep the default.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .records import normalize_task
from .slots import COMMON_WORDS, Slots, compare, extract

__all__ = ["Verdict", "decide", "of_neighbors", "wording_differences", "EXACT", "HIT",
           "SIMILAR", "MISS", "DEFAULT_THRESHOLD", "MIN_THRESHOLD", "MAX_THRESHOLD", "SIMILAR_MIN",
           "Observation", "Calibration", "calibrate", "calibration", "false_hit_upper_bound"]

EXACT, HIT, SIMILAR, MISS = "exact", "hit", "similar", "miss"
DEFAULT_THRESHOLD = 0.95
MIN_THRESHOLD = 0.80
MAX_THRESHOLD = 0.99
SIMILAR_MIN = 0.50


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str                      # exact | hit | similar | miss
    reason: str
    cosine: float
    threshold: float
    slots_equal: bool | None = None   # None: not compared (exact, miss)
    differences: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.verdict

    @property
    def reusable(self) -> bool:
        """exact or hit: the cached trajectory may be replayed as is."""
        return self.verdict in (EXACT, HIT)


def decide(query_text: str, candidate_text: str, cosine: float,
           threshold: float | None = None, *, similar_min: float = SIMILAR_MIN,
           query_slots: Slots | None = None, candidate_slots: Slots | None = None) -> Verdict:
    """The verdict for reusing ``candidate_text``'s trajectory for ``query_text``.

    ``cosine``: similarity of the two embeddings. ``threshold``: the hit threshold of the
    candidate's cluster (``DEFAULT_THRESHOLD`` if None). Slots are extracted unless given.
    """
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    c = float(cosine)
    if math.isnan(c):
        raise ValueError("cosine is NaN")
    if normalize_task(query_text) == normalize_task(candidate_text):
        return Verdict(EXACT, "same task text after normalization", c, t, True)
    if c < similar_min:
        return Verdict(MISS, f"cosine {c:.3f} < similar floor {similar_min:.2f}", c, t)
    qs = extract(query_text) if query_slots is None else query_slots
    cs = extract(candidate_text) if candidate_slots is None else candidate_slots
    equal, diffs = compare(qs, cs)
    if equal:
        diffs = wording_differences(query_text, candidate_text)
        equal = not diffs
    if equal and c >= t:
        return Verdict(HIT, f"cosine {c:.3f} >= {t:.2f} and all slots equal", c, t, True)
    if c < t:
        reason = f"cosine {c:.3f} < hit threshold {t:.2f}" + (f"; {diffs[0]}" if diffs else "")
    else:
        reason = diffs[0]
    return Verdict(SIMILAR, reason, c, t, equal, tuple(diffs))


def of_neighbors(query_text: str | None, query_hash: str | None, neighbors: list[dict],
                 hashes: list[str], threshold: float,
                 slots_of: Callable[[str], Slots] = extract) -> dict:
    """The semantic cache's verdict on a query's neighbours (best first, as searched;
    ``hashes``: their task hashes), as ``{"verdict", "reason", "slots_equal"}``. Reorders
    ``neighbors`` in place: the neighbour the verdict is about comes first.
    ``query_text`` None: a vector query; ``slots_of``: a stored text's slots (cached)."""
    if not neighbors:
        return {"verdict": MISS, "reason": "no trajectories match", "slots_equal": None}
    if query_hash is not None and query_hash in hashes:
        return _exact(neighbors, hashes, query_hash)
    top = neighbors[0]
    if query_text is None:
        v = SIMILAR if top["similarity"] >= SIMILAR_MIN else MISS
        return {"verdict": v, "reason": "a vector query has no text to compare slots: "
                "at most `similar`", "slots_equal": None}
    d = decide(query_text, top["task"], top["similarity"], threshold,
               candidate_slots=slots_of(top["task"]))
    kind, reason = d.verdict, d.reason
    if kind == HIT and top["success"] is False:
        kind, reason = SIMILAR, "the near-duplicate failed: adapt it, do not replay it"
    return {"verdict": kind, "reason": reason, "slots_equal": d.slots_equal}


_OUTCOME_RANK = {True: 0, None: 1, False: 2}  # runs of the same text: which to replay first


def _exact(neighbors: list[dict], hashes: list[str], query_hash: str) -> dict:
    """Runs of the query's own text (``query_hash``) are among the neighbours: they come
    first, those that succeeded first, then those of unknown outcome, then the failed ones
    (otherwise in search order). ``exact`` (replay it) unless none succeeded and one failed:
    then ``similar`` (adapt it), slots still equal (the text is the same)."""
    runs = [n for n, h in zip(neighbors, hashes, strict=True) if h == query_hash]
    runs.sort(key=lambda n: _OUTCOME_RANK[n["success"]])
    neighbors[:] = runs + [n for n, h in zip(neighbors, hashes, strict=True) if h != query_hash]
    ok = sum(n["success"] is True for n in runs)
    failed = sum(n["success"] is False for n in runs)
    unknown = len(runs) - ok - failed
    if ok:
        return {"verdict": EXACT, "reason": f"same normalized task text; {ok} of "
                f"{len(runs)} run(s) of it succeeded", "slots_equal": True}
    if not failed:
        return {"verdict": EXACT, "reason": "same normalized task text; no outcome reported "
                f"for its {unknown} run(s)", "slots_equal": True}
    if unknown:
        why = (f"the same task never succeeded ({failed} run(s) failed, {unknown} without "
               "an outcome)")
    else:
        why = f"the same task failed every time it was run ({failed} run(s))"
    return {"verdict": SIMILAR, "reason": why + ": adapt it, do not replay it",
            "slots_equal": True}


# -- template edits -----------------------------------------------------------------------

_WORD = re.compile(r"[^\W_][\w'’-]*")
_EDIT_MAX = 3
_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ies", "y", "e")
_FILLER = frozenset("anything anyone anybody exactly quite able sure wants wanted needs "
                    "needed wish likes tries going gonna wanna longer much one ones lot lots"
                    .split())
# words that only point at something the other side may name: pronouns, determiners,
# prepositions (not quantifiers: "all" vs "the kettle" is a difference)
_REFERENCE = frozenset("one ones it its them they this that these those the a an my your his "
                       "her their our to for of with in on at by from into".split())


def wording_differences(text_a: str, text_b: str) -> list[str]:
    """Content words swapped in place between two near-copies of one template.

    The texts are aligned word by word (difflib, casefolded). A *replacement* of at most 3
    words by at most 3 words is a difference when one side has a content word (3+ letters, not
    a common word, not an -ly adverb) that the other text does not contain anywhere and that is
    no spelling or inflection variant of a word on the other side (edit distance 1, or stem plus
    -s/-ed/-ing...): "the robotic one" vs "the canister one". Not when one side only points at
    what the other names (pronouns, determiners, prepositions: "exchange your current one to"
    vs "... bottle for"; a quantifier does not point: "all" vs "the kettle" differs), and
    insertions and deletions are not: rewording adds and drops whole sentences. ~1 ms for two
    100-word texts.
    """
    ta = _words(text_a)
    tb = _words(text_b)
    sa, sb = set(ta), set(tb)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb,
                                                      autojunk=False).get_opcodes():
        if op != "replace" or i2 - i1 > _EDIT_MAX or j2 - j1 > _EDIT_MAX:
            continue
        left, right = ta[i1:i2], tb[j1:j2]
        if all(w in _REFERENCE for w in left) or all(w in _REFERENCE for w in right):
            continue  # a pronoun spelled out: "your current one to" vs "... bottle for"
        if any(_new(w, sb, right) for w in left) or any(_new(w, sa, left) for w in right):
            out.append(f"slot 'wording' differs: {' '.join(left)!r} vs {' '.join(right)!r}")
    return out


def _words(text: str) -> list[str]:
    return [w.casefold().replace("’", "'")
            for w in _WORD.findall(unicodedata.normalize("NFKC", text))]


def _content(w: str) -> bool:
    return (len(w) >= 3 and w not in COMMON_WORDS and w not in _FILLER and not w[0].isdigit()
            and not w.endswith(("n't", "ly")))


def _new(w: str, other_text: set[str], other_side: list[str]) -> bool:
    return (_content(w) and w not in other_text
            and not any(_variant(w, x) for x in other_side))


def _variant(a: str, b: str) -> bool:
    """Same stem (``asks``/``asked``, ``price``/``prices``), or edit distance 1 (a typo)."""
    if not _stems(a).isdisjoint(_stems(b)):
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):  # one substitution or one adjacent transposition
        d = [i for i in range(len(a)) if a[i] != b[i]]
        return len(d) <= 1 or (len(d) == 2 and d[1] == d[0] + 1
                               and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]])
    short, long_ = sorted((a, b), key=len)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]  # one insertion


def _stems(w: str) -> set[str]:
    return {w} | {w[: -len(s)] for s in _SUFFIXES if w.endswith(s) and len(w) - len(s) >= 3}


# -- calibration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    cosine: float
    slots_equal: bool
    is_duplicate: bool


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    action: str                 # kept | raised | lowered
    reason: str
    n_duplicates: int
    n_negatives: int
    false_hits: int             # at the chosen threshold
    false_hit_rate: float
    false_hit_upper: float      # Jeffreys upper bound at the chosen confidence
    duplicate_hit_rate: float   # labelled duplicates that hit at the chosen threshold


def false_hit_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Jeffreys upper confidence bound of a rate with k events in n trials."""
    if n <= 0 or k >= n:
        return 1.0
    from scipy.special import betaincinv  # scipy comes with scikit-learn

    return float(betaincinv(k + 0.5, n - k + 0.5, confidence))


def calibrate(observations: Iterable[Observation | tuple[float, bool, bool]],
              **kwargs) -> float:
    """A cluster's hit threshold (the rule is in the module docstring); see ``calibration``
    for the keyword arguments and for the evidence behind the number."""
    return calibration(observations, **kwargs).threshold


def calibration(observations: Iterable[Observation | tuple[float, bool, bool]], *,
                target: float = 0.01, default: float = DEFAULT_THRESHOLD,
                confidence: float = 0.95, min_negatives: int = 100,
                floor: float = MIN_THRESHOLD, ceiling: float = MAX_THRESHOLD,
                step: float = 0.01) -> Calibration:
    """``calibrate`` with its evidence: counts, rates and the reason for the move."""
    obs = [o if isinstance(o, Observation) else Observation(float(o[0]), bool(o[1]), bool(o[2]))
           for o in observations]
    if not 0 < target < 1:
        raise ValueError("target must be in (0, 1)")
    if not floor <= default <= ceiling:
        raise ValueError(f"default {default} outside [{floor}, {ceiling}]")
    neg = [o.cosine for o in obs if not o.is_duplicate and o.slots_equal]
    dup = [o.cosine for o in obs if o.is_duplicate and o.slots_equal]
    n_neg = sum(1 for o in obs if not o.is_duplicate)
    n_dup = len(obs) - n_neg
    grid = [round(floor + i * step, 6) for i in range(int(round((ceiling - floor) / step)) + 1)]

    def fh(t: float) -> int:
        return sum(1 for c in neg if c >= t)

    def result(t: float, action: str, reason: str) -> Calibration:
        k = fh(t)
        return Calibration(t, action, reason, n_dup, n_neg, k, k / n_neg if n_neg else 0.0,
                           false_hit_upper_bound(k, n_neg, confidence),
                           sum(1 for c in dup if c >= t) / n_dup if n_dup else 0.0)

    if n_neg == 0:
        return result(default, "kept", "no labelled non-duplicates: no evidence to move")
    k0 = fh(default)
    if k0 / n_neg > target:
        for t in grid:
            if t > default and fh(t) / n_neg <= target:
                return result(t, "raised", f"{k0}/{n_neg} non-duplicates would hit at "
                              f"{default:.2f} (> {target:.1%}); {fh(t)} at {t:.2f}")
        return result(ceiling, "raised", f"{k0}/{n_neg} non-duplicates would hit at "
                      f"{default:.2f}; even {ceiling:.2f} does not reach {target:.1%}")
    if n_neg < min_negatives:
        return result(default, "kept", f"only {n_neg} non-duplicates (< {min_negatives}): "
                      "not enough evidence to lower")
    best = next((t for t in grid if t < default
                 and false_hit_upper_bound(fh(t), n_neg, confidence) <= target), None)
    if best is None:
        return result(default, "kept", f"no lower threshold keeps the false-hit rate under "
                      f"{target:.1%} with {confidence:.0%} confidence (n={n_neg})")
    gained = sum(1 for c in dup if best <= c < default)
    if gained == 0:
        return result(default, "kept", f"{best:.2f} would be safe but adds no duplicate hit")
    return result(best, "lowered", f"{fh(best)}/{n_neg} non-duplicates hit at {best:.2f}: "
                  f"under {target:.1%} with {confidence:.0%} confidence; +{gained} duplicate "
                  "hits")
