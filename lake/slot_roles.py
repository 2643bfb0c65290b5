"""Slot roles: where order matters in a task text, a swap is a difference.

The ``roles`` and ``order`` fields of ``lake.slots.Slots``:

* ``from X`` / ``to X`` (``into``, ``towards``, ``until``, ``till``; ``origin``/``source`` ->
  from, ``destination``/``target`` -> to), at most one filler word before the slot value X
  (any slot type of ``lake.slots``, or a name or number word): ``roles`` holds ``(X, "from" | "to")``.
* ``X to Y``, ``X -> Y``, ``X → Y``, ``X => Y`` between two slot values (one filler word allowed
  on each side): ``("to", X, Y)`` in ``order``: "NYC to SF", "{'size': 'S'} to {'size': 'M'}".
* ``X over Y``, ``X than Y`` (not after a comparative: "more than $5" is a comparative and a
  number), ``X rather than Y``, ``X instead of Y``, between the nearest content words:
  ``("over", X, Y)``: "art than animal", "art over the animal theme".

Only role *conflicts* are differences: the same value with role ``from`` in one text and ``to``
in the other, or an ordered pair reversed in the other text. So "fly to SF from NYC" vs "NYC to
SF" is no difference, "from NYC to SF" vs "from SF to NYC" is, and so is "NYC to SF" vs "SF to
NYC".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .slot_words import COMMON_WORDS, COMPARATIVES

if TYPE_CHECKING:
    from .slots import Slots

__all__ = ["roles_and_order", "role_differences"]

_ROLE_PREP = {"from": "from", "to": "to", "into": "to", "towards": "to", "toward": "to",
              "until": "to", "till": "to", "origin": "from", "source": "from",
              "destination": "to", "target": "to"}
_PAIR_CONNECTORS = frozenset(("to", "into", "->", "→", "=>", "⇒"))
_PAIR_FILLER = frozenset("the a an my your our their his her its this that one ones of".split())


def roles_and_order(toks: list, vals: list[str | None]
                    ) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """``roles`` and ``order`` of a scanned text (``vals``: each token's slot value)."""
    roles: set[tuple[str, str]] = set()
    order: set[tuple[str, str, str]] = set()
    n = len(toks)
    for i, v in enumerate(vals):
        if v is None:
            continue
        for k in (i - 1, i - 2):  # from/to before the value, one filler word allowed
            if k < 0 or toks[k][0] != "word":
                break
            if toks[k][1] in _ROLE_PREP:
                roles.add((v, _ROLE_PREP[toks[k][1]]))
                break
            if toks[k][1] not in _PAIR_FILLER:
                break
    for i, (kind, low, _) in enumerate(toks):
        if (kind == "arrow" and low != ">") or (kind == "word" and low in _PAIR_CONNECTORS):
            left, right = _near_value(toks, vals, i, -1), _near_value(toks, vals, i, 1)
            if left is not None and right is not None and left != right:
                order.add(("to", left, right))
        if kind != "word":
            continue
        if low in ("over", "than"):
            p = toks[i - 1][1] if i > 0 and toks[i - 1][0] == "word" else ""
            if low == "than" and (p in COMPARATIVES or p in ("other", "else")):
                continue
            li, ri = (i - 2 if p == "rather" else i - 1), i + 1
        elif low == "instead" and i + 1 < n and toks[i + 1][1] == "of":
            li, ri = i - 1, i + 2
        else:
            continue
        left, right = _content(toks, li, -1), _content(toks, ri, 1)
        if left and right and left != right:
            order.add(("over", left, right))
    return roles, order


def _near_value(toks: list, vals: list, i: int, step: int) -> str | None:
    """The slot value next to position i, one filler word allowed in between."""
    k = i + step
    for _ in range(2):
        if not 0 <= k < len(toks):
            return None
        if vals[k] is not None:
            return vals[k]
        if toks[k][0] != "word" or toks[k][1] not in _PAIR_FILLER:
            return None
        k += step
    return None


def _content(toks: list, k: int, step: int) -> str | None:
    """The nearest content word (or value) from position k in direction step."""
    for _ in range(3):
        if not 0 <= k < len(toks) or toks[k][0] in ("punct", "arrow"):
            return None
        kind, low, _ = toks[k]
        if kind != "word" or (low not in _PAIR_FILLER and low not in COMMON_WORDS):
            return low
        k += step
    return None


def role_differences(a: Slots, b: Slots) -> list[str]:
    """Role and order conflicts between two texts' slots, one readable line each."""
    diffs: list[str] = []
    ra: dict[str, set[str]] = {}
    rb: dict[str, set[str]] = {}
    for v, r in a.roles:
        ra.setdefault(v, set()).add(r)
    for v, r in b.roles:
        rb.setdefault(v, set()).add(r)
    for v in sorted(set(ra) & set(rb)):
        if ra[v] != rb[v]:
            diffs.append(f"slot 'role' differs: {v!r} is {'/'.join(sorted(ra[v]))} vs "
                         f"{'/'.join(sorted(rb[v]))}")
    seen: set[tuple[str, frozenset[str]]] = set()
    for one, other in ((a, b), (b, a)):  # symmetric: either side may hold the reversed pair
        for rel, x, y in sorted(one.order):
            pair = (rel, frozenset((x, y)))
            if (rel, y, x) in other.order and (rel, x, y) not in other.order \
                    and pair not in seen:
                seen.add(pair)
                diffs.append(f"slot 'order' differs: {x} {rel} {y} vs {y} {rel} {x}")
    return diffs
