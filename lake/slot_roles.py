"""Slot roles: where order matters in a task text, a swap is a difference.

The ``roles`` and ``order`` fields of ``lake.slots.Slots``:

* ``from X`` / ``to X`` (``into``, ``towards``, ``until``, ``till``; ``origin``/``source`` ->
  from, ``destination``/``target`` -> to), at most one filler word before the slot value X
  (any slot type of ``lake.slots``, or a name or number word): ``roles`` holds
  ``(X, "from" | "to")``.
* ``X to Y``, ``X -> Y``, ``X → Y``, ``X => Y`` between two slot values (one filler word allowed
  on each side): ``("to", X, Y)`` in ``order``: "NYC to SF", "{'size': 'S'} to {'size': 'M'}".
* ``X over Y``, ``X than Y`` (not after a comparative: "more than $5" is a comparative and a
  number), ``X rather than Y``, ``X instead of Y``, between the nearest content words:
  ``("over", X, Y)``: "art than animal", "art over the animal theme".

Only role *conflicts* are differences: the same value with role ``from`` in one text and ``to``
in the other, or an ordered pair reversed in the other text. So "fly to SF from NYC" vs "NYC to
SF" is no difference, "from NYC to SF" vs "from SF to NYC" is, and so is "NYC to SF" vs "SF to
NYC".

``role_words`` (role *phrases*, whatever the words' type or case): each role word gives the
content words and values of its phrase a role, ``(word, role)``:

* ``from`` / ``to`` (``into``, ``towards``) -> ``from`` / ``to`` for the phrase after it: "from
  plan P-100 to plan P-200", "from checking to savings", "from the basic plan". Content words
  count only in a sentence with both a from and a to phrase (a move); elsewhere only values do,
  as a cause ("die from allergies") or an infinitive ("trying to squash competition") alone is
  no move.
* ``X for Y`` after an exchange verb earlier in the sentence (exchange, swap, trade),
  ``X with Y`` after replace, ``X to Y`` / ``X into Y`` after either or after a change verb
  (change, switch, move, convert, modify, update, upgrade, downgrade) -> ``from`` for X (the
  phrase before the connector), ``to`` for Y: "exchange size M for size L", "replace the red
  cable with the blue one", "switch the user's plan basic to premium".
* a verb of an antonym pair -> its side of the pair for the phrase after it (its object):
  enable/disable (activate/deactivate, turn or switch on/off), grant/revoke (allow, permit;
  deny, forbid), accept/reject (approve; decline, refuse), add/remove (delete), lock/unlock,
  block/unblock, freeze/unfreeze, mute/unmute, pause/resume, connect/disconnect,
  subscribe/unsubscribe, increase/decrease (raise, boost; reduce), upgrade/downgrade,
  buy/sell (purchase), deposit/withdraw: "enable roaming and disable mobile data".

A phrase holds up to 3 content words or values, skips determiners, possessives and the
requester's nouns ("the user's"), and ends at punctuation or any other common word (a
preposition, conjunction, verb or auxiliary: "for John Smith", "and disable"). A content word is
one not in ``COMMON_WORDS``; an infinitive ("want to cancel") gives none.

A word conflicts when its roles on one axis (from/to, or one antonym pair) are disjoint between
the two texts: ``basic`` from in one text and to in the other; ``roaming`` enabled in one and
disabled in the other. A word with both roles in a text ("from the basic plan to the premium
plan": ``plan``), or with a role in one text only, is no conflict, so "fly to SF from NYC" vs
"from NYC to SF", "enable roaming and disable data" vs "disable data and enable roaming" and
"exchange the lamp for a bigger one" vs "swap the lamp to a bigger one" stay equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .slot_words import COMMON_WORDS, COMPARATIVES

if TYPE_CHECKING:
    from .slots import Slots

__all__ = ["roles_and_order", "role_words", "role_differences"]

_ROLE_PREP = {"from": "from", "to": "to", "into": "to", "towards": "to", "toward": "to",
              "until": "to", "till": "to", "origin": "from", "source": "from",
              "destination": "to", "target": "to"}
_PAIR_CONNECTORS = frozenset(("to", "into", "->", "→", "=>", "⇒"))
_PAIR_FILLER = frozenset("the a an my your our their his her its this that one ones of".split())

# role phrases: the role words, the words a phrase skips, the antonym verbs
_PHRASE_PREP = {"from": "from", "to": "to", "into": "to", "towards": "to", "toward": "to"}
_SWAP_VERBS = frozenset("exchange exchanges exchanging exchanged swap swaps swapping swapped "
                        "trade trades trading traded".split())
_REPLACE_VERBS = frozenset("replace replaces replacing replaced".split())
_CHANGE_VERBS = frozenset("change changes changing switch switches switching move moves moving "
                          "convert converts converting upgrade upgrades upgrading downgrade "
                          "downgrades downgrading modify modifies modifying update updates "
                          "updating".split())
# "X for Y", "X with Y", "X to Y": X is from, Y to, after one of these verbs in the sentence
_CONNECTED = {"for": _SWAP_VERBS, "with": _REPLACE_VERBS,
              "to": _SWAP_VERBS | _REPLACE_VERBS | _CHANGE_VERBS,
              "into": _SWAP_VERBS | _REPLACE_VERBS | _CHANGE_VERBS}
_VERBS = _SWAP_VERBS | _REPLACE_VERBS | _CHANGE_VERBS
_PHRASE_SKIP = _PAIR_FILLER | frozenset(
    "these those user customer both all each every some any".split())
_PHRASE_WORDS = 3
_PHRASE_REACH = 8  # tokens looked at for one phrase
_SENTENCE_END = frozenset(".!?;\n")
_ANTONYMS = (
    ("enable activate", "disable deactivate"), ("grant allow permit", "revoke deny forbid"),
    ("accept approve", "reject decline refuse"), ("add", "remove delete"), ("lock", "unlock"),
    ("block", "unblock"), ("freeze", "unfreeze"), ("unmute", "mute"), ("resume", "pause"),
    ("connect", "disconnect"), ("subscribe", "unsubscribe"),
    ("increase raise boost", "decrease reduce"), ("upgrade", "downgrade"),
    ("buy purchase", "sell"), ("deposit", "withdraw"))
_PARTICLE_VERBS = frozenset("turn turns turning turned switch switches switching switched"
                            .split())
_PARTICLES = {"on": "enable", "off": "disable"}


def _inflections(verb: str) -> set[str]:
    """``verb`` and its -s, -ed and -ing forms (regular spelling; a doubled last consonant
    too: stop, stopped)."""
    if verb.endswith("e"):
        return {verb, verb + "s", verb + "d", verb[:-1] + "ing"}
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return {verb, verb[:-1] + "ies", verb[:-1] + "ied", verb + "ing"}
    double = verb + verb[-1]
    return {verb, verb + "s", verb + "ed", verb + "ing", double + "ed", double + "ing"}


_POLE: dict[str, str] = {}  # verb form -> its side of an antonym pair (the pair's first verb)
_OPPOSITE: dict[str, str] = {"from": "to", "to": "from"}
for _yes, _no in _ANTONYMS:
    _y, _n = _yes.split()[0], _no.split()[0]
    _OPPOSITE.update({_y: _n, _n: _y})
    for _side, _verbs in ((_y, _yes), (_n, _no)):
        for _verb in _verbs.split():
            _POLE.update(dict.fromkeys(_inflections(_verb), _side))
_POLE.update({"withdrew": "withdraw", "withdrawn": "withdraw", "sold": "sell",
              "bought": "buy"})


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


def role_words(toks: list, vals: list[str | None]) -> set[tuple[str, str]]:
    """``role_words`` of a scanned text (see the module docstring). One pass: linear."""
    out: set[tuple[str, str]] = set()
    preps: list[tuple[str, str]] = []  # this sentence's from/to phrases' words
    verbs: set[str] = set()  # this sentence's exchange, replace and change verbs so far
    values = {v for v in vals if v is not None}
    n = len(toks)
    for i, (kind, low, _) in enumerate(toks):
        if kind == "punct" and low in _SENTENCE_END:
            _add_preps(out, preps, values)
            verbs.clear()
        if kind != "word":
            continue
        if low in _CONNECTED and not verbs.isdisjoint(_CONNECTED[low]):
            out.update((w, "from") for w in _phrase(toks, vals, i - 1, -1))
            out.update((w, "to") for w in _phrase(toks, vals, i + 1, 1))
            if low in _PHRASE_PREP:  # a to-phrase of the sentence too
                preps += ((w, "to") for w in _phrase(toks, vals, i + 1, 1))
        elif low in _PHRASE_PREP:
            preps += ((w, _PHRASE_PREP[low]) for w in _phrase(toks, vals, i + 1, 1))
        elif low in _POLE:
            out.update((w, _POLE[low]) for w in _phrase(toks, vals, i + 1, 1))
        elif low in _PARTICLE_VERBS and i + 1 < n and toks[i + 1][1] in _PARTICLES:
            out.update((w, _PARTICLES[toks[i + 1][1]]) for w in _phrase(toks, vals, i + 2, 1))
        if low in _VERBS:
            verbs.add(low)
    _add_preps(out, preps, values)
    return out


def _add_preps(out: set[tuple[str, str]], preps: list[tuple[str, str]],
               values: set[str]) -> None:
    """A sentence's from/to phrases: all their words if it has both a from and a to phrase
    (a move), else only their values ("to protect", "die from" are no move)."""
    if {r for _, r in preps} != {"from", "to"}:
        preps[:] = [(w, r) for w, r in preps if w in values]
    out.update(preps)
    preps.clear()


def _phrase(toks: list, vals: list[str | None], start: int, step: int) -> list[str]:
    """The content words and values of the phrase from position start (going ``step``)."""
    out: list[str] = []
    for k in range(start, start + step * _PHRASE_REACH, step):
        if not 0 <= k < len(toks) or len(out) == _PHRASE_WORDS:
            break
        kind, low, _ = toks[k]
        if vals[k] is not None:
            out.append(vals[k])
        elif kind != "word":
            break
        elif low not in COMMON_WORDS and low not in _POLE and low not in _VERBS:
            out.append(low)
        elif low not in _PHRASE_SKIP:
            break
    return out


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
    diffs += _word_conflicts(a.role_words, b.role_words, reported=set(ra) & set(rb))
    seen: set[tuple[str, frozenset[str]]] = set()
    for one, other in ((a, b), (b, a)):  # symmetric: either side may hold the reversed pair
        for rel, x, y in sorted(one.order):
            pair = (rel, frozenset((x, y)))
            if (rel, y, x) in other.order and (rel, x, y) not in other.order \
                    and pair not in seen:
                seen.add(pair)
                diffs.append(f"slot 'order' differs: {x} {rel} {y} vs {y} {rel} {x}")
    return diffs


def _word_conflicts(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]],
                    reported: set[str]) -> list[str]:
    """Words whose roles on one axis are disjoint between the texts (not already reported)."""
    ra: dict[str, set[str]] = {}
    rb: dict[str, set[str]] = {}
    for w, r in a:
        ra.setdefault(w, set()).add(r)
    for w, r in b:
        rb.setdefault(w, set()).add(r)
    diffs = []
    for w in sorted(set(ra) & set(rb) - reported):
        for r in sorted(ra[w]):
            axis = {r, _OPPOSITE[r]}
            if (ra[w] & axis).isdisjoint(rb[w] & axis) and rb[w] & axis:
                diffs.append(f"slot 'role' differs: {w!r} is {r} vs {_OPPOSITE[r]}")
                break
    return diffs
