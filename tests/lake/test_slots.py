"""Slots: extraction by type, comparison rules, properties, speed."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.slots import COMMON_WORDS, SLOT_TYPES, Slots, compare, extract


def differs(a: str, b: str) -> list[str]:
    equal, diffs = compare(extract(a), extract(b))
    assert equal == (not diffs)
    return diffs


def same(a: str, b: str) -> bool:
    return not differs(a, b)


# -- extraction by type -------------------------------------------------------------------

def test_ids_emails_phones_urls():
    s = extract("Cancel order #W5442520 for isabella_lopez_6490 (Isabella.Lopez@Example.com), "
                "call (555) 123-2002, see https://example.com/x.")
    assert s.order_ids == {"#W5442520"}
    assert s.user_ids == {"isabella_lopez_6490"}
    assert s.emails == {"isabella.lopez@example.com"}
    assert s.phones == {"5551232002"}
    assert s.urls == {"https://example.com/x"}


def test_codes_and_order_ids_name_the_same_reference():
    assert extract("order W5442520 and IPX4").codes == {"W5442520", "IPX4"}
    assert same("return order #W4284542", "return order W4284542")
    assert differs("return order #W1", "return order #W2") == [
        "slot 'order_id' differs: #W1 vs #W2"]


def test_numbers_are_normalized():
    s = extract("refund $1,131.50 and 4.4% of 32GB, 10 hours, two items, not one")
    assert {"1131.5", "4.4%", "32gb", "10hour", "2"} <= s.numbers
    assert "1" not in s.numbers            # "one" is mostly a pronoun
    assert same("pay $1,000", "pay 1000")
    assert same("wait 10 hours", "wait 10 hour")


def test_a_count_of_the_texts_own_requests_is_compared_only_on_both_sides():
    text = "Exchange the speaker and move the order to NYC."
    assert extract(text + " Mention the two requests at once.").counts == {"2"}
    assert same(text, text + " Mention the two requests at once.")
    assert same(text + " Mention the two things.", text + " Mention these two requests.")
    assert differs(text + " Mention the two things.", text + " Mention the three things.")
    assert differs("cancel the order", "cancel the two orders")  # a count of objects: a number
    assert differs("return two items", "return the items")


def test_dates_and_times():
    s = extract("Book it for May 3rd, 2024 at 3 p.m., or 2024-05-04, or 5/6/2024, or Friday")
    assert {"2024-05-03", "15:00", "2024-05-04", "5/6/2024", "friday"} <= s.dates
    assert same("meet on 3 May", "meet on May 3")
    assert not extract("you may 3 times").dates  # lower-case "may" is the verb
    assert differs("deliver it today", "deliver it tomorrow")


def test_quoted_strings_records_and_apostrophes():
    s = extract("""Set "Dark Mode" and `get_status_bar`; don't touch the user's 'beta' flag;
                modify Grill {'type': 'electric', 'size': 'medium'} now""")
    assert {"dark mode", "get_status_bar", "beta", "{'type': 'electric', 'size': 'medium'}"} \
        <= s.quoted
    assert not any("t touch" in q for q in s.quoted)  # apostrophes are not quotes


def test_names_skip_common_words_and_casing():
    s = extract("You are Isabella Johansson. Please book NYC. ONLY the PayPal one. Don't wait.")
    assert s.names == {"isabella", "johansson", "nyc", "paypal"}
    assert same("Exchange the Water Bottle", "exchange the water bottle")
    assert differs("You are Isabella", "You are Sofia")


def test_actions_past_forms_generic_change_and_negation_scope():
    assert extract("cancel the order and return the lamp").actions == {"cancel", "return"}
    assert extract("the order you paid for was sent").actions == set()
    assert extract("please do not cancel it").actions == set()
    assert extract("you change your mind").actions == set()
    assert same("exchange the watch", "change the watch")
    assert differs("return the lamp", "exchange the lamp")
    assert differs("keep the kettle", "change the kettle")


def test_comparatives():
    assert differs("exchange it for a bigger one", "exchange it for a smaller one")
    assert differs("the less bright lamp", "the brighter lamp")
    assert extract("no longer needed").comparatives == set()


def test_ranking_chains():
    assert extract("prefer battery > USB > AC").rankings == {("battery", "usb", "ac")}
    assert differs("prefer battery > USB > AC", "prefer AC adapter > battery > USB")


# -- roles --------------------------------------------------------------------------------

def test_flight_swap_differs():
    assert differs("book a flight NYC to SF", "book a flight SF to NYC") == [
        "slot 'order' differs: nyc to sf vs sf to nyc"]
    assert differs("book a flight from NYC to SF", "book a flight from SF to NYC")
    assert differs("fly to Paris", "fly from Paris")


def test_role_wording_without_conflict_is_equal():
    assert same("book a flight from NYC to SF", "book a flight to SF from NYC")
    assert same("book a flight from NYC to SF", "book a flight NYC to SF")


def test_preference_order():
    assert differs("you prefer art than animal theme", "you prefer animal than art theme")
    assert same("you prefer art than animal", "you prefer art over the animal theme")
    assert same("costs more than $5", "costs more than $5")
    assert not extract("costs more than $5").order


def test_record_to_record_order():
    a = "modify Grill {'type': 'gas'} to {'type': 'electric'}"
    b = "modify Grill {'type': 'electric'} to {'type': 'gas'}"
    assert any("'order'" in d for d in differs(a, b))


# -- negation -----------------------------------------------------------------------------

def test_negation_conflict():
    assert any("'negation'" in d for d in differs("cancel the order", "do not cancel the order"))
    assert differs("exchange the lamp. If asked again, do not exchange anything.",
                   "exchange the lamp.")


def test_negated_extra_information_is_no_conflict():
    assert same("return the lamp", "return the lamp. You do not remember your email address.")
    assert same("return the lamp", "return the lamp. You don't know your email.")
    assert not extract("not only the lamp").negations


# -- properties ---------------------------------------------------------------------------

_word = st.text(alphabet=string.ascii_letters, min_size=1, max_size=10)
_task = st.lists(st.one_of(
    _word,
    st.integers(0, 10**7).map(str),
    st.integers(0, 10**7).map(lambda n: f"#W{n}"),
    st.sampled_from(["from", "to", "not", "don't", ">", "than", "over", ",", ".", "'x'",
                     "NYC", "SF", "cancel", "return", "{'a': 1}", "May 3", "3pm"]),
), max_size=40).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), _task))
def test_compare_with_itself_is_equal(text):
    a = extract(text)
    assert compare(a, a) == (True, [])
    assert extract(text) == a and hash(extract(text)) == hash(a)


@settings(max_examples=200, deadline=None)
@given(_task, _task)
def test_compare_is_symmetric_in_equality(x, y):
    assert compare(extract(x), extract(y))[0] == compare(extract(y), extract(x))[0]


_place = st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=4).filter(
    lambda w: w.lower() not in COMMON_WORDS)


@settings(max_examples=200, deadline=None)
@given(_place, _place, st.sampled_from(["book a flight from {} to {}", "ship it from {} to {}",
                                        "book a flight {} to {}", "move {} -> {}"]))
def test_swapping_from_and_to_differs(a, b, template):
    if a == b:
        return
    assert differs(template.format(a, b), template.format(b, a))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from([
    "Cancel order #W{} today", "refund ${} to my card", "my zip code is {}",
    "I am user jo_smith_{}", "email jo{}@example.com", "set the limit to {} GB",
    "call 555-123-{:04d}", "order {} items"]))
def test_changing_a_number_or_id_differs(n, m, template):
    if template.startswith("call"):
        n, m = n % 10000, m % 10000
    if n == m:
        return
    assert differs(template.format(n), template.format(m))


def test_slots_are_frozen_and_hashable():
    s = extract("Cancel order #W1")
    with pytest.raises(AttributeError):
        s.order_ids = frozenset()  # type: ignore[misc]
    assert {s: 1}[extract("cancel  order #W1")] == 1
    assert not Slots() and extract("cancel #W1")
    assert set(s.as_dict()) <= set(SLOT_TYPES)


# -- speed --------------------------------------------------------------------------------

def test_extract_is_fast_on_short_texts():
    texts = [f"Cancel order #W{5442520 + i} for isabella_lopez_{i} and refund ${i}.50 to "
             f"the Visa card, not the gift card, by May {1 + i % 28}" for i in range(300)]
    extract(texts[0])
    t0 = time.perf_counter()
    for t in texts:
        extract(t)
    per_text = (time.perf_counter() - t0) / len(texts)
    assert per_text < 1e-3, f"{per_text * 1e6:.0f} us per text"  # ~50-100 us when idle


@pytest.mark.parametrize("text", ["a." * 10000, "1.2." * 5000, "'a " * 7000, "{" * 20000,
                                  "x" * 20000 + "@", "a_" * 10000, "not " * 5000])
def test_no_quadratic_blowup(text):
    t0 = time.perf_counter()
    extract(text)
    assert time.perf_counter() - t0 < 2.0
