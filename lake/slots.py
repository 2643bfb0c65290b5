"""Slots: the values in a task text that must match before a cached trajectory is reused.

Two task texts can be near-identical in wording and embedding ("book a flight NYC to SF" vs
"... SF to NYC", cosine ~0.99) yet need different plans, so the semantic cache calls a
candidate a ``hit`` only if, besides a high cosine, both texts carry the same *slots*.
``extract(text)`` returns a frozen, hashable ``Slots``; ``compare(a, b)`` returns
``(equal, differences)``, one readable line per difference: ``"slot 'order_id' differs:
#W1 vs #W2"``. Pure Python and regular expressions: ~50 us for a short text.

Slot types (one ``Slots`` field each; normalized values compared as sets, so repetition and
sentence order do not matter; a value only in one text is a difference):

``emails``        ``name@host.tld``, casefolded.  ``urls``: ``http(s)://...``.
``phones``        ``555-123-2002``, ``(555) 123-2002``, ``+1 555 123 2002``: digits only.
``order_ids``     ``#``-prefixed references (``#W5442520``, ``#1234``), upper-cased.
``user_ids``      identifiers with an underscore (``isabella_lopez_6490``,
                  ``credit_card_3566337``, ``get_status_bar``), casefolded.
``codes``         letter-led tokens holding a digit (``W5442520``, ``A320``, ``IPX4``), UUIDs,
                  long hex strings; upper-cased. ``#W1`` and ``W1`` count as the same reference.
``dates``         ``2024-05-01`` (with a time or not), ``5/1/2024``, ``May 1``, ``1 May 2024``,
                  ``May 1st, 2024`` (-> ``05-01``, ``2024-05-01``); times ``10:30``, ``3pm``,
                  ``3 p.m.`` (-> ``15:00``); weekdays, ``today``, ``tonight``, ``tomorrow``,
                  ``yesterday``.
``numbers``       digits with sign, currency, separators, decimals and a glued unit or a unit
                  word (``$1,131`` -> ``1131``, ``4.4%``, ``32GB`` -> ``32gb``, ``19 bar``,
                  ``10 hours`` -> ``10hour``); number words two..ninety, hundred, thousand,
                  million, billion, dozen (not ``one``: mostly a pronoun). "the (these,
                  those) two things (requests, problems, issues, questions)" counts the text's
                  own requests: a ``counts`` slot, compared only when both texts have one.
``quoted``        text in "double", “curly”, 'single' quotes (an apostrophe is not a quote:
                  the opening quote may not follow a letter), `backticks`, and ``{...}``
                  records kept whole (``{'size': 'S'}`` is one value); casefolded.
``names``         proper nouns: capitalized words (``Isabella``, ``NYC``, ``PayPal``,
                  ``Jigsaw``) whose lower-case form is not a common English word (``_COMMON``:
                  pronouns, determiners, auxiliaries, discourse words, frequent verbs, and so
                  all-caps emphasis like ``ONLY``); a sentence's first word included. Compared
                  word by word; a name is present in the other text if the word occurs there
                  in any case (casing alone is no difference).
``actions``       what is asked: verbs of a lexicon mapped to a canonical action (cancel,
                  return, exchange/swap, refund, modify/update/edit, change, keep, book/reserve,
                  reschedule, transfer, escalate (human, representative, supervisor), pay,
                  delete/remove, add, create, buy/purchase/reorder, upgrade, downgrade, renew,
                  (un)subscribe, enable, disable, reset, send, split). Not counted: past forms
                  (``the order you paid for`` describes, it does not ask), words in a negation's
                  scope (``do not cancel``), ``change your mind``. ``change`` is generic: it
                  matches an ``exchange`` or ``modify`` in the other text.
``comparatives``  ``more``, ``less``, ``fewer``, ``most``, ``least`` and the comparative and
                  superlative forms of common gradable adjectives (``bigger``, ``cheapest``,
                  ``brighter``): "a bigger one" and "a smaller one" embed almost alike.
``rankings``      preference chains with ``>`` (``battery > USB > AC``): the last word of each
                  element, in order.

Negation rule (``negations``). A cue (``not``, ``n't``, ``no``, ``never``, ``without``,
``cannot``, ``nor``; ``no longer``; ``not only`` is no cue) negates its *head*, the first next
word that is not a filler (``want to``, ``be``, determiners, pronouns, ``any``...). The scope
runs over the next 4 words, up to punctuation or a conjunction; scoped words are neither
asserted nor actions. ``negations`` holds ``(head, "-")`` (only negated in this text) or
``(head, "+-")`` (also asserted elsewhere in it). Two texts conflict when a head occurs in both
with a different polarity: "cancel it" vs "do not cancel it"; "exchange A; if asked again, do
not exchange anything" vs "exchange A". A negated statement about something the other text
never mentions is extra information, not a conflict. Heads about the requester rather than the
request (know, remember, mention, reveal, say, tell ...: "you do not remember your email") make
no negation slot.

Role rules (``roles``, ``order``, ``role_words``): where order matters, a swap is a difference;
see ``lake.slot_roles``.

``Slots`` equality (``==``, ``hash``) is exact equality of the fields, stricter than ``compare``,
which applies the tolerance and conflict rules above.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields

from .slot_roles import role_differences, role_words, roles_and_order
from .slot_words import (
    ACTIONS,
    COMMON_WORDS,
    COMPARATIVES,
    DAYS,
    DISCOURSE,
    GENERIC,
    MONTHS,
    NEG_CUES,
    NEG_FILLER,
    NO_CONFLICT,
    NUMBER_WORDS,
    PAST,
    SCOPE_BREAK,
    SCOPE_WORDS,
    UNIT_WORDS,
)

__all__ = ["Slots", "extract", "compare", "SLOT_TYPES", "COMMON_WORDS"]


@dataclass(frozen=True, slots=True)
class Slots:
    emails: frozenset[str] = frozenset()
    urls: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    user_ids: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    dates: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()
    quoted: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    comparatives: frozenset[str] = frozenset()
    rankings: frozenset[tuple[str, ...]] = frozenset()
    counts: frozenset[str] = frozenset()
    negations: frozenset[tuple[str, str]] = frozenset()
    roles: frozenset[tuple[str, str]] = frozenset()
    order: frozenset[tuple[str, str, str]] = frozenset()
    role_words: frozenset[tuple[str, str]] = frozenset()
    #: every word and value, lower-cased (names are looked up in it)
    words: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: words and values outside any negation scope (for the negation rule)
    asserted: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def as_dict(self) -> dict[str, list]:
        """Non-empty slot fields as sorted lists (for logs and API answers)."""
        return {f.name: sorted(getattr(self, f.name)) for f in fields(self)
                if f.name in SLOT_TYPES and getattr(self, f.name)}

    def __bool__(self) -> bool:
        return any(getattr(self, n) for n in SLOT_TYPES)


# field -> the singular name used in difference messages; compared as sets
_SET_FIELDS = {
    "emails": "email", "urls": "url", "phones": "phone", "order_ids": "order_id",
    "user_ids": "user_id", "codes": "code", "dates": "date", "numbers": "number",
    "quoted": "quoted", "names": "name", "actions": "action", "comparatives": "comparative",
    "rankings": "ranking"}
SLOT_TYPES = tuple(_SET_FIELDS) + ("counts", "negations", "roles", "order", "role_words")

# -- the scanner --------------------------------------------------------------------------

_MONTH_RE = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|(?-i:May)|june?|july?|"
             r"aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_UNIT_RE = "|".join(sorted((re.escape(u) for u in UNIT_WORDS), key=len, reverse=True))
# "fast" takes plain words in one step (atomic group, no backtracking); a word that may
# start an email, id, url or date falls through to the specific patterns.
_SCAN = re.compile(r"""
  (?P<fast>(?>[^\W\d_]+(?:['’-][^\W\d_]+)*))(?![\w.%+-]{0,64}@|[\w-]{0,64}[_\d]|://|\.?\s+\d)
| (?P<email>[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)
| (?P<url>\bhttps?://[^\s<>"'`]+)
| (?P<record>\{[^{}\n]{0,400}\})
| "(?P<dq>[^"\n]{1,200})" | “(?P<cq>[^”\n]{1,200})” | ‘(?P<csq>[^’\n]{1,200})’
| `(?P<bq>[^`\n]{1,200})` | (?<![\w'’])'(?P<sq>[^'\n]{1,200}?)'(?![\w])
| (?P<iso>\b\d{4}-\d{2}-\d{2}(?:[T\s]\d{1,2}:\d{2}(?::\d{2})?)?\b)
| (?P<slash>\b\d{1,2}/\d{1,2}/\d{2,4}\b)
| (?P<phone>(?<![\w#])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b)
| (?P<time>\b\d{1,2}(?::\d{2})?\s?(?:[ap]\.m\.|[ap]m\b)|\b\d{1,2}:\d{2}\b)
| (?P<mdy>\b""" + _MONTH_RE + r"""\.?\s+\d{1,2}(?:st|nd|rd|th)?\b(?:,?\s+\d{4}\b)?)
| (?P<dmy>\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?""" + _MONTH_RE + r"""\b\.?(?:,?\s+\d{4}\b)?)
| (?P<oid>\#[A-Za-z0-9][A-Za-z0-9_-]*)
| (?P<uid>\b[A-Za-z][A-Za-z0-9]{0,64}(?:_[A-Za-z0-9]+)+\b)
| (?P<hex>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b
         |\b(?=[a-f]*\d)(?=\d*[a-f])[0-9a-f]{12,}\b)
| (?P<code>\b[A-Za-z][A-Za-z-]{0,64}\d[A-Za-z0-9-]*\b)
| (?P<num>(?<![\w.])[-+]?[$€£¥]?\d+(?:,\d{3})*(?:\.\d+)?(?:(?:\s?%)|[A-Za-z]{1,4}\b|\s(?:"""
    + _UNIT_RE + r""")\b)?)
| (?P<word>[^\W\d_](?:[\w'’-]*\w)?)
| (?P<arrow>->|→|=>|⇒|>)
| (?P<punct>[.!?;:,()\[\]\n—–])
""", re.VERBOSE | re.IGNORECASE)


def _norm_num(s: str) -> str:
    m = re.match(r"([-+]?)[$€£¥]?(\d+(?:\.\d+)?)\s*(.*)$", s.strip().replace(",", ""))
    if not m:
        return s.lower()
    sign, digits, unit = m.groups()
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    unit = unit.lower().replace(" ", "")
    if unit == "percent":
        unit = "%"
    elif len(unit) > 3 and unit.endswith("s"):
        unit = unit[:-1]  # hours -> hour, pieces -> piece
    return f"{'-' if sign == '-' else ''}{digits}{unit}"


def _norm_time(s: str) -> str:
    m = re.match(r"(\d{1,2})(?::(\d{2}))?(am|pm)?$", s.lower().replace(".", "").replace(" ", ""))
    if not m:
        return s.lower()
    h, mi, ap = int(m.group(1)), int(m.group(2) or 0), m.group(3)
    h = h + 12 if ap == "pm" and h < 12 else 0 if ap == "am" and h == 12 else h
    return f"{h:02d}:{mi:02d}"


def _norm_date(s: str, kind: str) -> str:
    if kind == "mdy":
        mo, d, y = re.match(r"([A-Za-z]+)\.?\s+(\d+)\w*(?:,?\s+(\d{4}))?", s).groups()
    else:
        d, mo, y = re.match(r"(\d+)\w*\s+(?:of\s+)?([A-Za-z]+)\.?(?:,?\s+(\d{4}))?", s).groups()
    md = f"{MONTHS.get(mo.lower(), 0):02d}-{int(d):02d}"
    return f"{y}-{md}" if y else md


def _casefold(s: str) -> str:
    return " ".join(s.casefold().split())


_NORMALIZE = {  # regex group -> (slot field, normalizer of the whole match)
    "email": ("emails", str.casefold),
    "url": ("urls", lambda s: s.rstrip(".,;:!?)]}")),
    "record": ("quoted", _casefold),
    "iso": ("dates", lambda s: s.replace(" ", "T")),
    "slash": ("dates", str),
    "phone": ("phones", lambda s: re.sub(r"\D", "", s)),
    "time": ("dates", _norm_time),
    "oid": ("order_ids", str.upper),
    "uid": ("user_ids", str.casefold),
    "hex": ("codes", str.upper),
    "code": ("codes", str.upper),
    "num": ("numbers", _norm_num),
}
_QUOTES = ("dq", "cq", "csq", "bq", "sq")

# A token is (kind, value, is_name): kind is a slot field, "word", "arrow" or "punct"; a
# word's value is lower-cased with a possessive 's dropped.


def _scan(text: str) -> list[tuple[str, str, bool]]:
    toks = []
    for m in _SCAN.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind == "fast" or kind == "word":
            s = s.replace("’", "'")
            low = s.lower()
            if low.endswith("'s"):
                low = low[:-2]
            name = (s[0].isupper() and len(low) > 1 and low not in COMMON_WORDS
                    and not low.endswith("n't"))
            toks.append(("word", low, name))
        elif kind in _NORMALIZE:
            field_, norm = _NORMALIZE[kind]
            toks.append((field_, norm(s), False))
        elif kind in _QUOTES:
            toks.append(("quoted", _casefold(m.group(kind)), False))
        elif kind in ("mdy", "dmy"):
            toks.append(("dates", _norm_date(s, kind), False))
        else:
            toks.append((kind, s, False))  # arrow, punct
    return toks


def _is_cue(w: str) -> bool:
    return w in NEG_CUES or w.endswith("n't")


def extract(text: str) -> Slots:
    """The slots of one text (see the module docstring for what counts)."""
    toks = _scan(unicodedata.normalize("NFKC", text))
    n = len(toks)
    sets: dict[str, set] = {k: set() for k in _SET_FIELDS}
    negated: set[str] = set()
    asserted: set[str] = set()
    words: set[str] = set()
    counts: set[str] = set()

    # negation scopes and heads
    in_scope = [False] * n
    for i, (kind, low, _) in enumerate(toks):
        if kind != "word" or not _is_cue(low):
            continue
        if low == "not" and i + 1 < n and toks[i + 1][1] == "only":
            continue
        head = None
        j = i + 1
        while j < n and j <= i + SCOPE_WORDS:
            kj, wj, _ = toks[j]
            if kj in ("punct", "arrow") or wj in SCOPE_BREAK:
                break
            in_scope[j] = True
            if head is None and (kj != "word" or (wj not in NEG_FILLER and not _is_cue(wj))):
                head = ACTIONS.get(wj, wj) if kj == "word" else wj
            j += 1
        if head is not None and head not in NO_CONFLICT:
            negated.add(head)

    # values, names, actions, comparatives
    prev = ""
    for i, (kind, low, name) in enumerate(toks):
        if kind in _SET_FIELDS:
            sets[kind].add(low)
            words.add(low)
            if not in_scope[i]:
                asserted.add(low)
        elif kind == "word":
            words.add(low)
            if name:
                sets["names"].add(low)
            elif low in NUMBER_WORDS:
                (counts if prev in ("the", "these", "those") and i + 1 < n and toks[i + 1][1]
                 in DISCOURSE else sets["numbers"]).add(NUMBER_WORDS[low])
            elif low in DAYS:
                sets["dates"].add(low)
            if not in_scope[i] and not _is_cue(low):
                asserted.add(low)
                canon = ACTIONS.get(low)
                if canon is not None:
                    asserted.add(canon)
                    if low not in PAST and not (
                            canon == "change" and i + 2 < n and toks[i + 2][1] == "mind"):
                        sets["actions"].add(canon)
            if low in COMPARATIVES and not (low == "longer" and prev == "no"):
                sets["comparatives"].add(low)
        prev = low if kind == "word" else ""

    vals = [_value(t) for t in toks]
    roles, order = roles_and_order(toks, vals)
    return Slots(**{k: frozenset(v) for k, v in sets.items() if k != "rankings"},
                 rankings=frozenset(_rankings(toks)), counts=frozenset(counts),
                 negations=frozenset((h, "+-" if h in asserted else "-") for h in negated),
                 roles=frozenset(roles), order=frozenset(order),
                 role_words=frozenset(role_words(toks, vals)), words=frozenset(words),
                 asserted=frozenset(asserted))


def _value(tok: tuple[str, str, bool]) -> str | None:
    """A token's slot value: typed values, names and number words; else None."""
    kind, low, name = tok
    if kind in _SET_FIELDS:
        return low
    if kind == "word":
        if name:
            return low
        return NUMBER_WORDS.get(low)
    return None


def _rankings(toks: list) -> list[tuple[str, ...]]:
    """Chains ``a > b > c``: the last word (or value) of each element, in order."""
    out = []
    n = len(toks)
    i = 0
    while i < n:
        if toks[i][:2] != ("arrow", ">"):
            i += 1
            continue
        chain = [toks[i - 1][1]] if i > 0 and toks[i - 1][0] != "punct" else []
        j = i
        while j < n and toks[j][:2] == ("arrow", ">"):
            k, last = j + 1, None
            while k < n and toks[k][0] not in ("arrow", "punct"):
                last, k = toks[k][1], k + 1
            if last is not None:
                chain.append(last)
            j = k
        if len(chain) >= 2:
            out.append(tuple(chain))
        i = j
    return out


# -- comparison ---------------------------------------------------------------------------

_POL = {"+": "asserted", "-": "negated", "+-": "both asserted and negated"}


def _fmt(values) -> str:
    if not values:
        return "(none)"
    return ", ".join(" > ".join(v) if isinstance(v, tuple) else v for v in sorted(values))


def _refs(s: Slots) -> frozenset[str]:
    return frozenset(v.lstrip("#") for v in s.order_ids | s.codes)


def compare(a: Slots, b: Slots) -> tuple[bool, list[str]]:
    """``(equal, differences)``: set slots must be equal; negations, roles and order must not
    conflict (see the module docstring). The differences are stable, readable lines."""
    diffs: list[str] = []
    same_refs = _refs(a) == _refs(b)
    for fname, label in _SET_FIELDS.items():
        va, vb = getattr(a, fname), getattr(b, fname)
        if va == vb or (same_refs and fname in ("order_ids", "codes")):
            continue
        only_a, only_b = va - vb, vb - va
        if fname == "actions":  # 'change' matches exchange or modify, and they it
            only_a = {v for v in only_a if GENERIC.get(v, frozenset()).isdisjoint(b.actions)}
            only_b = {v for v in only_b if GENERIC.get(v, frozenset()).isdisjoint(a.actions)}
        elif fname == "names":  # casing alone is no difference
            only_a = {v for v in only_a if v not in b.words}
            only_b = {v for v in only_b if v not in a.words}
        if only_a or only_b:
            diffs.append(f"slot '{label}' differs: {_fmt(only_a)} vs {_fmt(only_b)}")
    if a.counts and b.counts and a.counts != b.counts:
        diffs.append(f"slot 'count' differs: {_fmt(a.counts)} vs {_fmt(b.counts)}")
    pa, pb = dict(a.negations), dict(b.negations)
    for head in sorted(set(pa) | set(pb)):
        pol_a = pa.get(head) or ("+" if head in a.asserted else None)
        pol_b = pb.get(head) or ("+" if head in b.asserted else None)
        if pol_a and pol_b and pol_a != pol_b:
            diffs.append(f"slot 'negation' differs: {head!r} is {_POL[pol_a]} vs {_POL[pol_b]}")
    diffs += role_differences(a, b)
    return (not diffs, diffs)
