"""JMS message selectors (JMS 1.1 §3.8.1) as ActiveMQ 5.17 evaluates them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mqemu.broker.errors import InvalidSelector, PreconditionFailed
from mqemu.broker.message import Message, QueueEntry
from mqemu.broker.selector import compile_selector


def msg(headers=None, **props) -> Message:
    if headers is not None:
        props["headers"] = headers
    return Message("", "q", b"body", props)


JAMES = msg({
    "name": "James", "location": "London", "rank": 123, "version": 2, "intProp": 123,
    "floatProp": 123.0, "quote": "'In God We Trust'", "foo": "_foo", "trueProp": True,
    "falseProp": False, "endingUnderScore": "XD7xlJIQn_", "count": "7", "multi\nline": 1,
    "text": "a\nb",
}, type="selector-test", message_id="ID:test:1:1:1:1", correlation_id="corr-1",
    delivery_mode=2, priority=7, timestamp=1_700_000_000, expiration="60000")
BARE = msg()  # no properties at all: priority defaults to 4, delivery mode non-persistent

# (selector, message, expected)
CASES = [
    # literals, identifiers, equality
    ("name = 'James'", JAMES, True),
    ("name = 'james'", JAMES, False),
    ("NAME = 'James'", JAMES, False),  # identifiers are case-sensitive, keywords are not
    ("name = 'James' aNd rank = 123", JAMES, True),
    ("rank = 123", JAMES, True),
    ("rank = 123.0", JAMES, True),  # numeric promotion
    ("floatProp = 123", JAMES, True),
    ("rank = 0x7B", JAMES, True),
    ("rank = 0173", JAMES, True),  # octal
    ("rank = 123L", JAMES, True),
    ("rank <> 124", JAMES, True),
    ("quote = '''In God We Trust'''", JAMES, True),
    ("TRUE", BARE, True),
    ("FALSE", BARE, False),
    ("NULL", BARE, False),
    ("trueProp", JAMES, True),
    ("falseProp", JAMES, False),
    ("name", JAMES, False),  # a non-boolean property as a condition is false
    ("trueProp = TRUE", JAMES, True),
    # comparisons and arithmetic
    ("rank > 100", JAMES, True),
    ("rank >= 123", JAMES, True),
    ("rank >= 124", JAMES, False),
    ("rank < 124 and rank <= 123", JAMES, True),
    ("rank + 2 = 125", JAMES, True),
    ("125 = (rank + 2)", JAMES, True),
    ("rank - version = 121", JAMES, True),
    ("rank * version = 246", JAMES, True),
    ("rank / version = 61.5", JAMES, True),
    ("version / 2 = 1", JAMES, True),
    ("rank % 10 = 3", JAMES, True),
    ("-rank < 0", JAMES, True),
    ("- -rank = 123", JAMES, True),
    ("rank / 0 > 1000000", JAMES, True),  # Java double division: Infinity
    ("name + '!' = 'James!'", JAMES, True),
    ("name * 2 = 1", JAMES, False),  # ActiveMQ throws; no match
    ("1.0 < 1.1 AND -1.1E1 < 1.0E1 AND .1 < .5 AND 1. < 1.1 AND 4E+10 < 5E+10 AND 4E-10 < 5E-10", BARE, True),
    # BETWEEN
    ("rank BETWEEN 100 AND 150", JAMES, True),
    ("rank between 10 and 120", JAMES, False),
    ("rank NOT BETWEEN 10 AND 120", JAMES, True),
    ("missing BETWEEN 1 AND 2", JAMES, False),
    ("missing NOT BETWEEN 1 AND 2", JAMES, False),
    # LIKE
    ("quote LIKE '''In G_d We Trust'''", JAMES, True),
    ("quote LIKE '''In Gd_ We Trust'''", JAMES, False),
    ("quote NOT LIKE '''In Gd_ We Trust'''", JAMES, True),
    ("foo LIKE '%oo'", JAMES, True),
    ("foo LIKE '!_%' ESCAPE '!'", JAMES, True),
    ("quote LIKE '!_%' ESCAPE '!'", JAMES, False),
    ("endingUnderScore LIKE '_D7xlJIQn$_' ESCAPE '$'", JAMES, True),
    ("endingUnderScore LIKE '%D7xlJIQn%%' ESCAPE '%'", JAMES, False),
    ("endingUnderScore LIKE '_D7xlJIQn\\_' ESCAPE '\\'", JAMES, True),
    ("name LIKE 'J.m%'", JAMES, False),  # regex characters are literal
    ("text LIKE 'a%b'", JAMES, True),  # % spans line breaks
    ("rank LIKE '1%'", JAMES, False),  # LIKE on a number is false
    ("missing LIKE '%'", JAMES, False),
    ("missing NOT LIKE '%'", JAMES, False),
    # IN
    ("name IN ('Bob', 'James', 'Gromit')", JAMES, True),
    ("name in ('Gromit', 'Bob', 'Cheddar')", JAMES, False),
    ("name not in ('Gromit', 'Bob', 'Cheddar')", JAMES, True),
    ("missing NOT IN ('a', 'b')", JAMES, False),  # NULL: unknown
    ("rank IN ('123')", JAMES, False),  # ActiveMQ: a non-string is unknown
    ("rank NOT IN ('1')", JAMES, False),
    # NULL and three-valued logic (JMS 1.1 §3.8.1.2)
    ("missing IS NULL", JAMES, True),
    ("missing IS NOT NULL", JAMES, False),
    ("name IS NOT NULL", JAMES, True),
    ("missing = 'x'", JAMES, False),
    ("NOT (missing = 'x')", JAMES, False),
    ("missing > 1", JAMES, False),
    ("NOT (missing > 1)", JAMES, False),
    ("missing > 1 OR rank = 123", JAMES, True),
    ("missing > 1 AND rank = 123", JAMES, False),
    ("NOT (missing > 1 AND rank = 124)", JAMES, True),  # unknown AND false = false
    ("NOT (missing > 1 OR rank = 124)", JAMES, False),  # unknown OR false = unknown
    ("unknown = 'Foo' or anotherUnknown < 200", JAMES, False),
    ("missing = other", JAMES, True),  # ActiveMQ: NULL = NULL is true
    ("NOT ('x' = missing)", JAMES, True),  # ActiveMQ: a NULL on the right only is false
    # ActiveMQ: NOT binds tighter than comparisons
    ("NOT rank = 123", JAMES, False),
    ("NOT falseProp", JAMES, True),
    # types: a string property against a number is false without conversion
    ("count > 5", JAMES, False),
    ("count = 7", JAMES, False),
    ("count = '7'", JAMES, True),
    ("convert_string_expressions:count > 5", JAMES, True),
    ("convert_string_expressions:count = 7.0", JAMES, True),
    ("convert_string_expressions:count > 7.5", JAMES, False),
    ("convert_string_expressions:name > 5", JAMES, False),  # NumberFormatException: false
    ("trueProp = 1", JAMES, False),  # booleans never equal numbers
    # JMS headers as ActiveMQ resolves them
    ("JMSType = 'selector-test'", JAMES, True),
    ("JMSMessageID = 'ID:test:1:1:1:1'", JAMES, True),
    ("JMSCorrelationID = 'corr-1'", JAMES, True),
    ("JMSPriority = 7", JAMES, True),
    ("JMSPriority = 4", BARE, True),  # the JMS default priority
    ("JMSDeliveryMode = 'PERSISTENT'", JAMES, True),
    ("JMSDeliveryMode = 'NON_PERSISTENT'", BARE, True),
    ("JMSTimestamp = 1700000000000", JAMES, True),
    ("JMSExpiration = 1700000060000", JAMES, True),
    ("JMSExpiration = 0", BARE, True),
    ("JMSRedelivered = FALSE", BARE, True),
    ("JMSXDeliveryCount = 1", BARE, True),
    ("JMSXGroupID IS NULL", BARE, True),
    ("JMSXGroupSeq = 0", BARE, True),
    ("JMSType IS NULL", BARE, True),
    # comments and layout
    ("/* hi */ name = 'James' -- trailing comment\n", JAMES, True),
    ("name='James'AND(rank>1)", JAMES, True),
]


@pytest.mark.parametrize("text,message,expected", CASES)
def test_selector_table(text, message, expected):
    assert compile_selector(text).matches(message) is expected


def test_convert_string_expressions_keyword():
    sel = compile_selector("count > 5", convert_string_expressions=True)
    assert sel.matches(JAMES)
    assert sel.convert_strings and sel.text == "count > 5"
    assert compile_selector("convert_string_expressions:count > 5").text == "count > 5"
    stomp = msg({"flag": "true", "n": "-3", "x": "1e3"})
    conv = lambda s: compile_selector(s, convert_string_expressions=True).matches(stomp)
    assert conv("flag = TRUE") and conv("n < 0") and conv("x = 1000.0") and not conv("x = 1000")


def test_entry_headers():
    sel = compile_selector("JMSRedelivered AND JMSXDeliveryCount = 3")
    entry = QueueEntry(BARE, None)
    assert not sel.matches(BARE, entry)
    entry.redelivered, entry.delivery_count = True, 2
    assert sel.matches(BARE, entry)


INVALID = [
    "",
    "   ",
    "3+5",
    "True AND 3+5",
    "=TEST 'test'",
    "prop1 = prop2 foo AND string = 'Test'",
    "a = 1 AMD  b = 2",
    "'abc'",
    "name = 'unterminated",
    "a == 1",
    "a != 1",
    "a = NULL",
    "NULL = a",
    "TRUE = 1",
    "a > 'x'",
    "a > TRUE",
    "(a > 1) > 2",
    "a BETWEEN 'a' AND 'z'",
    "a LIKE b",
    "a LIKE 'x' ESCAPE 'ab'",
    "a LIKE 'x' ESCAPE ''",
    "a IN (1, 2)",
    "a IN ()",
    "'a' IN ('a')",
    "a + 1 IN ('x')",
    "NOT 5",
    "a AND",
    "(a = 1",
    "a = 1)",
    "a = 019",
    "a = 0xFFFFFFFFFFFFFFFFF",
    "XPATH '//root'",
    "REGEX('a', b)",
    "a = \"x\"",
    "né = 1",
    "a = 1 -- comment without a line end",
    "(" * 2000 + "a" + ")" * 2000,
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_selectors(text):
    with pytest.raises(InvalidSelector) as info:
        compile_selector(text)
    e = info.value
    assert isinstance(e, PreconditionFailed) and e.code == 406 and e.soft
    assert e.text == text and e.reason  # ActiveMQ: the message is the selector itself
    assert str(e).startswith(f"PRECONDITION_FAILED - Invalid selector '{text}': ")


ALPHABET = st.sampled_from(list("abcxyzXYZ_$0123456789.'()=<>!+-*/%,eElLx \n\t") + [
    " AND ", " OR ", " NOT ", " IS ", " NULL ", " LIKE ", " ESCAPE ", " IN ", " BETWEEN ",
    " TRUE ", " FALSE ", "--", "/*", "*/", "é", "\x00", "JMSPriority", "convert_string_expressions:"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=30).map("".join) | st.text(max_size=40))
def test_any_text_raises_only_invalid_selector(text):
    try:
        sel = compile_selector(text)
    except InvalidSelector:
        return
    assert isinstance(sel.matches(JAMES), bool)
    assert isinstance(sel.matches(BARE, QueueEntry(BARE, None)), bool)


def test_evaluation_is_cheap():
    import time
    sel = compile_selector("name = 'James' AND rank BETWEEN 100 AND 200 AND location IN ('London', 'Paris')")
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        sel.matches(JAMES)
    per = (time.perf_counter() - t) / n
    assert per < 50e-6  # a few microseconds in practice; generous for slow CI machines
