"""Role phrases (``lake.slot_roles``): a task whose roles are reversed is no near-duplicate.

The reversed cases are QA report F-HIT's (each was a ``hit``, "reuse it"); the counter-cases
are rewordings of one meaning that must stay equal.
"""

from __future__ import annotations

import time

import pytest

from lake.slots import compare, extract


def differs(a: str, b: str) -> list[str]:
    equal, diffs = compare(extract(a), extract(b))
    assert equal == (not diffs)
    assert compare(extract(b), extract(a))[0] == equal  # symmetric
    return diffs


REVERSED = [  # (task, the same task with its roles reversed, the first difference)
    ("Move the user's line from plan P-100 to plan P-200 on 555-123-2002",
     "Move the user's line from plan P-200 to plan P-100 on 555-123-2002",
     "slot 'role' differs: 'P-100' is from vs to"),
    ("Transfer $50 from checking to savings for John Smith",
     "Transfer $50 from savings to checking for John Smith",
     "slot 'role' differs: 'checking' is from vs to"),
    ("Switch the user from the basic plan to the premium plan",
     "Switch the user from the premium plan to the basic plan",
     "slot 'role' differs: 'basic' is from vs to"),
    ("Enable roaming and disable mobile data on 555-123-2002",
     "Disable roaming and enable mobile data on 555-123-2002",
     "slot 'role' differs: 'data' is disable vs enable"),
    ("Exchange 2 blue T-shirts size M for size L in order #W1000002",
     "Exchange 2 blue T-shirts size L for size M in order #W1000002",
     "slot 'role' differs: 'l' is to vs from"),
    ("Change the shipping address of order #W1212121 from 12 Oak St to 99 Elm St",
     "Change the shipping address of order #W1212121 from 99 Elm St to 12 Oak St",
     "slot 'role' differs: '12' is from vs to"),
    ("Turn on roaming and turn off wifi calling", "Turn off roaming and turn on wifi calling",
     "slot 'role' differs: 'calling' is disable vs enable"),
    ("Replace the red cable with the blue cable", "Replace the blue cable with the red cable",
     "slot 'role' differs: 'blue' is to vs from"),
    ("Switch the user's plan basic to premium", "Switch the user's plan premium to basic",
     "slot 'role' differs: 'basic' is from vs to"),
    ("Grant the camera permission and revoke the location permission",
     "Revoke the camera permission and grant the location permission",
     "slot 'role' differs: 'camera' is grant vs revoke"),
    ("Add the warranty and remove the gift wrap", "Remove the warranty and add the gift wrap",
     "slot 'role' differs: 'gift' is remove vs add"),
    ("Lock the front door and unlock the garage", "Unlock the front door and lock the garage",
     "slot 'role' differs: 'door' is lock vs unlock"),
]


@pytest.mark.parametrize(("a", "b", "first"), REVERSED, ids=[r[0][:30] for r in REVERSED])
def test_reversed_roles_differ(a, b, first):
    assert differs(a, b)[0] == first


SAME_MEANING = [
    ("book a flight from NYC to SF", "book a flight to SF from NYC"),
    ("fly to SF from NYC", "fly from NYC to SF"),
    ("Switch the user from the basic plan to the premium plan",
     "Switch the user to the premium plan from the basic plan"),
    ("Transfer $50 from checking to savings for John Smith",
     "For John Smith, transfer $50 to savings from checking"),
    ("Enable roaming and disable mobile data", "Disable mobile data and enable roaming"),
    ("Exchange the blue T-shirt for a red one", "Swap the blue T-shirt to a red T-shirt"),
    ("Exchange size M for size L", "Exchange the size M shirt for one in size L"),
    ("Move the line from plan P-100 to plan P-200", "Move the line to plan P-200 from P-100"),
    ("You want to cancel the order", "You would like to cancel the order"),
]


@pytest.mark.parametrize(("a", "b"), SAME_MEANING, ids=[p[0][:30] for p in SAME_MEANING])
def test_reworded_same_roles_stay_equal(a, b):
    assert differs(a, b) == []


def test_a_to_or_from_without_a_move_gives_content_words_no_role():
    """A cause or an infinitive alone is no move: only a sentence with a from and a to phrase
    gives its content words roles; values keep theirs anywhere."""
    assert not extract("They were trying to squash competition").role_words
    assert differs("They die from these allergies", "They die due to these allergies") == []
    assert ("P-100", "from") in extract("Move the line from plan P-100").role_words


def test_exchange_for_needs_an_exchange_verb_in_the_sentence():
    assert not extract("Cancel the lamp for John and refund it").role_words
    assert extract("Exchange the lamp. Do it for John").role_words == set()
    assert {("lamp", "from"), ("kettle", "to")} <= extract(
        "Exchange the lamp for the kettle").role_words


def test_a_phrase_skips_fillers_and_stops_at_common_words():
    words = extract("Disable the user's mobile data on 555-123-2002 and enable wifi").role_words
    assert words == {("mobile", "disable"), ("data", "disable"), ("wifi", "enable")}


def test_a_word_with_both_roles_or_one_side_only_is_no_conflict():
    assert differs("move the plan from the basic plan to the premium plan",
                   "move the plan to the premium plan") == []
    assert differs("Enable roaming for data", "Enable data roaming") == []


@pytest.mark.parametrize("text", ["to " * 10000, "exchange " + "for " * 10000,
                                  "from a to b " * 3000, "turn on " * 5000])
def test_role_words_take_linear_time(text):
    t0 = time.perf_counter()
    extract(text)
    assert time.perf_counter() - t0 < 2.0
