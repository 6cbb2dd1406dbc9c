"""SQL92 filters (``rmq_broker.filter.sql92``) against RocketMQ 4.9's ``SelectorParser`` grammar and the
evaluation rules of its expression classes: operators, precedence, literals, null semantics, Java number and
boolean coercions, compile-time checks, malformed input with positions, bounds, the cache, and a property
test against a plain reference interpreter.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_broker.filter import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_IN_LIST,
    Sql92FilterCache,
    Sql92ParseError,
)
from rmq_broker.filter import compile_sql92 as c
from rmq_broker.filter.records import record_properties
from rmq_broker.filter.sql92 import JavaLong, Sql92EvalError
from rmq_common._record import encode_record
from rmq_common.properties import encode_properties

ERROR = "error"


def ev(expr: str, **props: str):
    """The expression's value for these properties: True, False, None or ERROR (evaluation threw)."""
    try:
        return c(expr).evaluate(props)
    except Sql92EvalError:
        return ERROR


def m(expr: str, **props: str) -> bool:
    return c(expr).matches(props)


# -- operators -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, props, expected", [
    ("a = 3", {"a": "3"}, True),
    ("a = 3", {"a": "4"}, False),
    ("a = 'x'", {"a": "x"}, True),
    ("a = 'x'", {"a": "X"}, False),                   # case-sensitive
    ("a <> 3", {"a": "4"}, True),
    ("a <> 3", {"a": "3"}, False),
    ("a <> 'x'", {"a": "y"}, True),
    ("a > 3", {"a": "4"}, True),
    ("a > 3", {"a": "3"}, False),
    ("a >= 3", {"a": "3"}, True),
    ("a >= 3", {"a": "2"}, False),
    ("a < 3", {"a": "2"}, True),
    ("a < 3", {"a": "3"}, False),
    ("a <= 3", {"a": "3"}, True),
    ("a <= 3", {"a": "4"}, False),
    ("a BETWEEN 1 AND 3", {"a": "1"}, True),
    ("a BETWEEN 1 AND 3", {"a": "3"}, True),
    ("a BETWEEN 1 AND 3", {"a": "4"}, False),
    ("a NOT BETWEEN 1 AND 3", {"a": "4"}, True),
    ("a NOT BETWEEN 1 AND 3", {"a": "0"}, True),
    ("a NOT BETWEEN 1 AND 3", {"a": "2"}, False),
    ("a IN ('x', 'y')", {"a": "y"}, True),
    ("a IN ('x', 'y')", {"a": "z"}, False),
    ("a IN ('1','2','3','4','5','6')", {"a": "6"}, True),
    ("a NOT IN ('x', 'y')", {"a": "z"}, True),
    ("a NOT IN ('x', 'y')", {"a": "x"}, False),
    ("a IS NULL", {}, True),
    ("a IS NULL", {"a": "1"}, False),
    ("a IS NOT NULL", {"a": "1"}, True),
    ("a IS NOT NULL", {}, False),
    ("a = 1 AND b = 2", {"a": "1", "b": "2"}, True),
    ("a = 1 AND b = 2", {"a": "1", "b": "3"}, False),
    ("a = 1 OR b = 2", {"a": "0", "b": "2"}, True),
    ("a = 1 OR b = 2", {"a": "0", "b": "0"}, False),
    ("NOT (a = 1)", {"a": "2"}, True),
    ("NOT (a = 1)", {"a": "1"}, False),
    ("TRUE", {}, True),
    ("FALSE", {}, False),
    ("TAGS = 'TagA'", {"TAGS": "TagA"}, True),
])
def test_every_operator(expr: str, props: dict[str, str], expected: bool) -> None:
    assert c(expr).evaluate(props) is expected
    assert c(expr).matches(props) is expected


def test_keywords_are_case_insensitive_identifiers_are_not() -> None:
    assert m("a between 1 and 3 And b in ('x') oR c is not null", a="2", b="x")
    assert m("A = 1", A="1") and not m("A = 1", a="1")
    assert m("$price_1 > 0 and _x = 'y'", **{"$price_1": "5", "_x": "y"})
    # words that are not keywords in 4.9 stay property names (CONTAINS & co. came in 5.1.3)
    assert m("contains = 'x' AND startswith = 'y' AND endswith = 'z' AND now = 'n' AND like = 'l'",
             contains="x", startswith="y", endswith="z", now="n", like="l")
    assert m("INx = 1 AND notx = 2", INx="1", notx="2")


def test_comments_and_whitespace() -> None:
    assert m("/* leading */ a = 1 -- trailing comment\n", a="1")
    assert m("a\t=\r\n1\fAND/**/b=2", a="1", b="2")
    assert m("a = 1 /* a ** tricky **/ AND b = 2 /***/", a="1", b="2")
    # '--' without a following line end is two minus signs, as in RocketMQ's token manager
    assert m("a = --1", a="1")
    with pytest.raises(Sql92ParseError):
        c("a = --1\n")                              # here it is a comment: 'a =' is incomplete


# -- precedence --------------------------------------------------------------------------------------

def test_and_binds_tighter_than_or() -> None:
    assert m("a = 1 OR b = 1 AND c = 1", a="1", b="0", c="0")
    assert not m("(a = 1 OR b = 1) AND c = 1", a="1", b="0", c="0")
    assert m("a = 1 AND b = 1 OR c = 1", a="0", b="0", c="1")
    assert not m("a = 1 AND (b = 1 OR c = 1)", a="0", b="0", c="1")


def test_not_binds_tighter_than_comparisons() -> None:
    # RocketMQ's grammar: NOT is a prefix of unaryExpr, so NOT a = 1 is (NOT a) = 1
    assert ev("NOT a = 1", a="2") is False           # (NOT 'false'-cast) = TRUE, compared with 1: Boolean vs Integer → FALSE
    assert ev("NOT (a = 1)", a="2") is True
    assert ev("NOT a = 1") is None                   # NOT of a missing property is null
    with pytest.raises(Sql92ParseError, match="boolean expression cannot be compared"):
        c("NOT a > 1")


def test_comparisons_bind_tighter_than_equality() -> None:
    assert m("a > 1 = TRUE", a="2")
    assert m("a > 1 = b < 1", a="2", b="0")
    assert m("a > 1 IS NULL")                        # (a > 1) IS NULL with a missing
    assert m("a = 'x' = TRUE", a="x")                # equality chains are left-associative
    assert not m("a = 'x' = FALSE", a="x")
    assert m("a = 'x' <> FALSE", a="x")


def test_parentheses_and_unary_plus() -> None:
    assert m("((a)) IN ('x')", a="x")               # a parenthesised property is still a property
    assert m("+a = 'x'", a="x")
    assert m("a = +5 AND (((b = 2)))", a="5", b="2")


# -- literals ----------------------------------------------------------------------------------------

def test_string_literals() -> None:
    assert m("a = 'it''s'", a="it's")
    assert m("a = ''''", a="'")
    assert m("a = ''", a="")
    assert m("a = 'x y -- /* z */'", a="x y -- /* z */")
    assert m("a = 'line\nbreak'", a="line\nbreak")
    assert m("a = 'ünï€ode'", a="ünï€ode")


def test_numeric_literals_have_java_types() -> None:
    assert c("a = 1").evaluate({"a": "1"})
    # Integer literals parse the property with Integer.valueOf, Long literals with Long.valueOf
    assert ev("a > 5", a="3000000000") == ERROR
    assert ev("a > 5L", a="3000000000") == ERROR      # 5L fits an int: still an Integer
    assert ev("a > 2147483647", a="3000000000") == ERROR  # Integer.MAX_VALUE is still an Integer
    assert ev("a > 2147483648", a="3000000000") is True   # a Long literal
    assert ev("a < 2147483648", a="3000000000") is False
    assert ev("a = 9223372036854775807", a="9223372036854775807") is True
    assert ev("a = -9223372036854775807", a="-9223372036854775807") is True
    # doubles
    for lit in ("1.5", "1.50", "15E-1", "0.15e1", "15e-1", ".15E1"):
        assert ev(f"a = {lit}", a="1.5") is True, lit
    assert ev("a = 5.", a="5") is True
    assert ev("a > 0.0", a="0.5") is True             # RocketMQ refuses the literal 0.0; rmq does not
    # mixed literal types compare as Java promotes them
    assert m("1 = 1.0 AND 2 > 1.5 AND 3000000000 > 2 AND 1 < 3000000000 AND 2.5 < 3000000000")


def test_boolean_literals() -> None:
    assert ev("a = TRUE", a="true") is True
    assert ev("a = TRUE", a="TrUe") is True
    assert ev("a = TRUE", a="yes") is False
    assert ev("a = FALSE", a="yes") is True            # Boolean.valueOf("yes") is false
    assert ev("TRUE = a", a="true") == ERROR           # Java casts the Boolean to a String: ClassCastException
    assert ev("TRUE = a") is False
    assert m("TRUE = TRUE AND FALSE <> TRUE AND NOT FALSE")
    assert ev("1 = TRUE") is False                     # Integer vs Boolean: not equal, no error
    assert ev("NULL") is None and ev("NOT NULL") is None
    assert ev("NULL IS NULL") is True


def test_negation() -> None:
    assert ev("a > -5", a="-4") is True
    assert ev("a = -2147483648", a="-2147483648") is True   # minus a Long literal
    assert ev("a = - -3", a="3") is True
    assert ev("-a = 1", a="-1") is None                  # negating a string is null: null = 1 is null
    assert ev("1 = -a", a="-1") is False
    assert ev("-a IS NULL", a="1") is True
    assert ev("a = -'x'", a="x") is False                # minus a string is null
    assert ev("a = -1.5", a="-1.5") is True
    assert ev("-(a = 1) IS NULL", a="1") is True         # minus a boolean is null


# -- null semantics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", [
    "a = 1", "a <> 1", "a = 'x'", "a <> 'x'", "a > 1", "a >= 1", "a < 1", "a <= 1", "1 < a", "a > b",
    "a BETWEEN 1 AND 2", "a NOT BETWEEN 1 AND 2", "a IN ('x')", "a NOT IN ('x')", "a", "NOT a",
    "a = TRUE", "NOT (a = 1)", "a = b", "a = 'x' OR b > 1",
])
def test_a_missing_property_makes_comparisons_null(expr: str) -> None:
    assert ev(expr, b="1") is None
    assert not m(expr, b="1")


def test_null_equals_null() -> None:
    # doCreateEqual: two nulls are equal (lv == rv), one null is null on the left, FALSE on the right
    assert ev("a = b") is True
    assert ev("a <> b") is False
    assert ev("'x' = a") is False
    assert ev("a = 'x'") is None


def test_three_valued_logic() -> None:
    null, t, f = "x = 1", "TRUE", "FALSE"              # x is never set
    table = {
        (t, t): (True, True), (t, f): (False, True), (t, null): (None, True),
        (f, t): (False, True), (f, f): (False, False), (f, null): (False, None),
        (null, t): (None, True), (null, f): (False, None), (null, null): (None, None),
    }
    for (left, right), (and_, or_) in table.items():
        assert ev(f"({left}) AND ({right})") is and_, (left, right)
        assert ev(f"({left}) OR ({right})") is or_, (left, right)
    assert ev(f"NOT ({null})") is None
    # a null that is combined away still lets the message match
    assert m("x = 1 OR a = 'y'", a="y")
    assert not m("x = 1 AND a = 'y'", a="y")


def test_a_property_as_a_boolean() -> None:
    # createBooleanCast: a property value is a string, never a Boolean: FALSE when present, null when missing
    assert ev("a", a="true") is False
    assert ev("a") is None
    assert ev("NOT a", a="true") is True
    assert ev("a OR b = 1", a="true", b="1") is True


# -- coercion of property strings --------------------------------------------------------------------

def test_strings_compared_with_numbers() -> None:
    assert ev("a > 9", a="10") is True                 # numeric, not lexicographic
    assert ev("a = 5", a="05") is True
    assert ev("a = 5", a="+5") is True
    assert ev("a = 5", a="٥") is True                  # Integer.valueOf takes any Unicode decimal digit
    assert ev("a = 5", a=" 5") == ERROR                # Integer.valueOf does not trim
    assert ev("a = 5", a="5.0") == ERROR               # not an Integer
    assert ev("a = 5.0", a="5") is True                # Double.valueOf
    assert ev("a = 5.0", a=" 5 ") is True              # Double.valueOf trims
    assert ev("a = 5.0", a="5d") is True and ev("a = 5.0", a="5F") is True
    assert ev("a = 8.0", a="0x1p3") is True            # hex floating point
    assert ev("a > 1.0", a="Infinity") is True
    assert ev("a > 1.0", a="NaN") is True              # Double.compare puts NaN above everything
    assert ev("a = 1.0", a="1_0") == ERROR
    assert ev("a > 5", a="abc") == ERROR
    assert ev("a <> 5", a="abc") == ERROR              # NOT of an error is an error: no match either way
    assert ev("a = 'abc'", a="abc") is True
    assert ev("a > 5.0", a="") == ERROR


def test_two_properties_are_compared_as_doubles_by_order_and_as_strings_by_equality() -> None:
    assert ev("a > b", a="10", b="9") is True
    assert ev("a < b", a="1e1", b="11") is True
    assert ev("a > b", a="x", b="1") == ERROR
    assert ev("a = b", a="1.0", b="1") is False        # equality of two strings is string equality
    assert ev("a = b", a="x", b="x") is True


def test_an_evaluation_error_stops_the_evaluation() -> None:
    # RocketMQ evaluates left to right; an exception aborts the whole expression (no match)
    assert ev("a > 5 OR b = 1", a="abc", b="1") == ERROR
    assert not m("a > 5 OR b = 1", a="abc", b="1")
    # short-circuit: the failing comparison is never evaluated
    assert ev("b = 1 OR a > 5", a="abc", b="1") is True
    assert ev("b = 2 AND a > 5", a="abc", b="1") is False


def test_in_needs_exact_strings() -> None:
    assert ev("a IN ('1')", a="01") is False
    assert ev("a IN ('x', 'x')", a="x") is True


def test_between_bounds() -> None:
    assert m("a BETWEEN 1 AND 1", a="1")
    assert m("a BETWEEN 1.0 AND 2.5", a="2.5")
    assert ev("a BETWEEN 1 AND 2.5", a="2.5") == ERROR    # a >= 1 parses "2.5" as an Integer
    assert m("a BETWEEN -2 AND -1", a="-1")
    # bounds that are not literals are not checked: minus makes an expression
    assert not m("a BETWEEN -1 AND -5", a="-3")
    assert m("a NOT BETWEEN 5 AND 1", a="3")            # NOT BETWEEN never checks the order
    assert m("a BETWEEN b AND c", a="2", b="1", c="3")
    assert m("a BETWEEN 1 AND 3 AND b = 1", a="2", b="1")


# -- malformed expressions -------------------------------------------------------------------------------

MALFORMED = [
    # (expression, 1-based column of the reported position, text in the message)
    ("", 1, "unexpected end of input"),
    ("   ", 4, "unexpected end of input"),
    ("a =", 4, "unexpected end of input"),
    ("a = 1 b", 7, "unexpected 'b'"),
    ("a = 1)", 6, "unexpected ')'"),
    ("(a = 1", 7, "expecting ')'"),
    ("a != 1", 3, "use '<>'"),
    ("a == 1", 4, "unexpected '='"),
    ("a = 1 &&  b = 2", 7, "unexpected character '&'"),
    ("a = 1 || b = 2", 7, "unexpected character '|'"),
    ("a > 'x'", 5, "cannot be compared"),
    ("'x' < a", 1, "cannot be compared"),
    ("a > TRUE", 5, "cannot be compared"),
    ("a >= NULL", 6, "cannot be compared"),
    ("a = NULL", 5, "IS NULL"),
    ("NULL <> a", 1, "IS NULL"),
    ("TRUE = 1", 8, "cannot be compared with"),
    ("FALSE = 'x'", 9, "cannot be compared with"),
    ("'x'", 1, "will not result in a boolean"),
    ("5", 1, "will not result in a boolean"),
    ("-a", 1, "will not result in a boolean"),
    ("NOT 5", 5, "will not result in a boolean"),
    ("a = 1 AND 5", 11, "will not result in a boolean"),
    ("'x' OR a = 1", 1, "will not result in a boolean"),
    ("a BETWEEN 3 AND 1", 11, "lower bound"),
    ("a BETWEEN 1 AND NULL", 3, "can not be NULL"),
    ("a BETWEEN 'a' AND 'b'", 11, "cannot be compared"),
    ("a BETWEEN 1 OR 2", 13, "expecting AND"),
    ("a BETWEEN 1", 12, "expecting AND"),
    ("a IN (1, 2)", 7, "expecting a string literal"),
    ("a IN ()", 7, "expecting a string literal"),
    ("a IN 'x'", 6, "expecting '('"),
    ("a IN ('x'", 10, "expecting ',' or ')'"),
    ("a IN ('x',)", 11, "expecting a string literal"),
    ("'x' IN ('x')", 1, "IN expects a property"),
    ("1 NOT IN ('x')", 1, "IN expects a property"),
    ("a NOT LIKE 'x'", 7, "BETWEEN or IN after NOT"),
    ("a NOT = 1", 7, "BETWEEN or IN after NOT"),
    ("a IS 5", 6, "NULL or NOT NULL"),
    ("a IS NOT 5", 10, "expecting NULL"),
    ("a > 1 > 2", 3, "boolean expression cannot be compared"),
    ("a > (b = 1)", 8, "boolean expression cannot be compared"),
    ("a.b = 1", 2, "unexpected character '.'"),
    ("a = .", 5, "unexpected character '.'"),
    ("a = 'abc", 5, "unterminated string"),
    ("a = 1 /* x", 7, "unterminated comment"),
    ("a = 1e999", 5, "greater than"),
    ("a = 9223372036854775808", 5, "out of the Long range"),
    ("a = 0L", 6, "unexpected 'L'"),
    ("a = 1.5L", 8, "unexpected 'L'"),
    ("a = 007", 6, "unexpected '0'"),                 # "0" is a whole decimal literal
    ("a = \"x\"", 5, "unexpected character '\"'"),
    ("a = 1 AND", 10, "unexpected end of input"),
    ("OR a = 1", 1, "unexpected 'OR'"),
    ("a = 1 OR OR b = 2", 10, "unexpected 'OR'"),
    ("a = 1 AND ()", 12, "unexpected ')'"),
    ("é = 1", 1, "unexpected character 'é'"),
    ("a =\n  ?", 3, "unexpected character '?'"),
]


@pytest.mark.parametrize("expr, column, text", MALFORMED)
def test_malformed_expressions_raise_with_a_position(expr: str, column: int, text: str) -> None:
    with pytest.raises(Sql92ParseError) as info:
        c(expr)
    err = info.value
    assert text in str(err), str(err)
    assert err.column == column, str(err)
    assert f"column {column}" in str(err)
    assert err.position == expr.rfind("\n", 0, err.position) + column


def test_malformed_cases_are_many_and_distinct() -> None:
    assert len({e for e, _, _ in MALFORMED}) == len(MALFORMED) >= 30


def test_positions_on_later_lines() -> None:
    with pytest.raises(Sql92ParseError) as info:
        c("a = 1\nAND b = 2\nAND c >")
    assert (info.value.line, info.value.column) == (3, 8)


# -- bounds ------------------------------------------------------------------------------------------

def test_expression_length_bound() -> None:
    clause = "a = 'x' OR "
    ok = clause * ((MAX_EXPRESSION_LENGTH - 10) // len(clause)) + "b = 1"
    assert len(ok) <= MAX_EXPRESSION_LENGTH
    assert m(ok, b="1")                                # a long flat OR chain is fine
    with pytest.raises(Sql92ParseError, match="longer than"):
        c("a = 1 " + " " * MAX_EXPRESSION_LENGTH)


def test_nesting_bound() -> None:
    assert m("(" * (MAX_DEPTH - 1) + "a = 1" + ")" * (MAX_DEPTH - 1), a="1")
    for deep in ("(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1),
                 "NOT " * (MAX_DEPTH + 1) + "a",
                 "a = " + "-" * (MAX_DEPTH + 1) + "1",
                 "a = 'x'" + " = TRUE" * (MAX_DEPTH + 1)):
        with pytest.raises(Sql92ParseError, match="nested deeper"):
            c(deep)
    assert m("NOT " * (MAX_DEPTH // 2 * 2 - 2) + "(a = 1)", a="1")


def test_in_list_bound() -> None:
    ok = "a IN (" + ", ".join(f"'{i}'" for i in range(MAX_IN_LIST)) + ")"
    assert m(ok, a=str(MAX_IN_LIST - 1))
    with pytest.raises(Sql92ParseError, match="values in IN"):
        c("a IN (" + ", ".join(f"'{i}'" for i in range(MAX_IN_LIST + 1)) + ")")


# -- cache and record properties -------------------------------------------------------------------------

def test_cache_compiles_once_and_remembers_failures() -> None:
    cache = Sql92FilterCache(max_entries=2)
    f = cache.get("a = 1")
    assert cache.get("a = 1") is f
    for _ in range(2):
        with pytest.raises(Sql92ParseError) as info:
            cache.get("a = ")
        assert info.value.column == 5
    assert len(cache) == 2
    cache.get("b = 1")                                  # evicts the least recently used ("a = 1")
    assert len(cache) == 2
    assert cache.get("a = 1") is not f
    with pytest.raises(ValueError):
        Sql92FilterCache(0)


def test_filter_attributes() -> None:
    f = c("a = 1 AND (b IS NULL OR TAGS IN ('x'))")
    assert f.property_names == {"a", "b", "TAGS"}
    assert f.expression == "a = 1 AND (b IS NULL OR TAGS IN ('x'))"
    assert "a = 1" in repr(f)
    with pytest.raises(TypeError):
        c(b"a = 1")  # type: ignore[arg-type]


@pytest.mark.parametrize("v6", [False, True])
def test_record_properties(v6: bool) -> None:
    host = ("::1", 7) if v6 else ("127.0.0.1", 5)
    props = {"a": "1", "TAGS": "TagA", "KEYS": "k1 k2", "u": "ü"}
    record = encode_record(topic="T", body=b"\x02\x01" * 50, born_host=host, store_host=host,
                           sys_flag=0x30 if v6 else 0, properties=encode_properties(props))
    assert record_properties(memoryview(record)) == props
    assert record_properties(encode_record(topic="T", body=b"x")) == {}
    assert record_properties(record[:60]) == {}


# -- property test against a reference interpreter -----------------------------------------------------

# The reference: RocketMQ's expression classes transcribed directly, over tagged Java values
# ("I", v) Integer, ("L", v) Long, ("D", v) Double, ("S", v) String, ("B", v) Boolean, None null.

class RefError(Exception):
    pass


def ref_int(text: str, lo: int, hi: int) -> int:
    sign, digits = (text[0], text[1:]) if text[:1] in "+-" and text else ("+", text)
    if not digits or not all(ch.isdecimal() for ch in digits):
        raise RefError
    value = int(digits) * (-1 if sign == "-" else 1)
    if not lo <= value <= hi:
        raise RefError
    return value


def ref_double(text: str) -> float:
    t = text.strip("".join(chr(i) for i in range(33)))
    if t.endswith(("d", "D", "f", "F")) and "x" not in t.lower():
        t = t[:-1]
    if t.lower().startswith(("0x", "+0x", "-0x")):
        try:
            return float.fromhex(t)
        except ValueError:
            raise RefError from None
    if t in ("NaN", "+NaN", "-NaN") or t.lstrip("+-") == "Infinity":
        return float(t)
    if not t or any(ch not in "0123456789.eE+-" for ch in t) or t.lstrip("+-").lower().startswith(("inf", "nan")):
        raise RefError
    try:
        return float(t)
    except ValueError:
        raise RefError from None


def ref_convert(value, kind):
    t, v = value
    if t == kind:
        return value
    if t == "S":
        if kind == "B":
            return ("B", v.lower() == "true")
        if kind == "I":
            return ("I", ref_int(v, -2**31, 2**31 - 1))
        if kind == "L":
            return ("L", ref_int(v, -2**63, 2**63 - 1))
        return ("D", ref_double(v))
    return (kind, float(v) if kind == "D" else v)


def ref_compare(lv, rv) -> int:
    lt, rt = lv[0], rv[0]
    if lt != rt:
        if lt == "B":
            if rt == "S":
                raise RefError
            return -1
        if lt in "ILD" and rt == "B":
            return -1
        if lt in "IL" and rt in "IL":
            pass
        elif lt in "IL" and rt == "D":
            lv = ref_convert(lv, "D")
        elif lt == "D" and rt in "IL":
            rv = ref_convert(rv, "D")
        elif lt == "S":
            lv = ref_convert(lv, rt)
        else:
            rv = ref_convert(rv, lt)
    a, b = lv[1], rv[1]
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return 0 if math.isnan(a) and math.isnan(b) else (1 if math.isnan(a) else -1)
        if a == b == 0.0:
            return (math.copysign(1, a) > math.copysign(1, b)) - (math.copysign(1, a) < math.copysign(1, b))
    return (a > b) - (a < b)


def ref_eval(node, props):
    op = node[0]
    if op == "prop":
        v = props.get(node[1])
        return None if v is None else ("S", v)
    if op == "lit":
        return node[1]
    if op == "neg":
        v = ref_eval(node[1], props)
        if v is None or v[0] in "SB":
            return None
        if v[0] == "D":
            return ("D", -v[1])
        bits = 32 if v[0] == "I" else 64
        x = (-v[1]) % (1 << bits)
        return (v[0], x - (1 << bits) if x >= 1 << (bits - 1) else x)
    if op == "not":
        v = ref_eval(node[1], props)
        return None if v is None else ("B", not v[1])
    if op == "cast":
        v = ref_eval(node[1], props)
        return None if v is None else ("B", v[1] if v[0] == "B" else False)
    if op in ("and", "or"):
        lv = ref_eval(node[1], props)
        if op == "and" and lv is not None and not lv[1]:
            return ("B", False)
        if op == "or" and lv is not None and lv[1]:
            return ("B", True)
        rv = ref_eval(node[2], props)
        if op == "and" and rv is not None and not rv[1]:
            return ("B", False)
        if op == "or" and rv is not None and rv[1]:
            return ("B", True)
        if lv is None or rv is None:
            return None
        return ("B", op == "and")
    if op == "eq":
        lv, rv = ref_eval(node[1], props), ref_eval(node[2], props)
        if (lv is None) != (rv is None):
            return None if lv is None else ("B", False)
        if lv is None or lv == rv:
            return ("B", True)
        return ("B", ref_compare(lv, rv) == 0)
    if op == "cmp":
        lv = ref_eval(node[2], props)
        if lv is None:
            return None
        rv = ref_eval(node[3], props)
        if rv is None:
            return None
        if lv[0] == rv[0] == "S":
            r = ref_compare(("D", ref_double(lv[1])), ("D", ref_double(rv[1])))
        else:
            r = ref_compare(lv, rv)
        return ("B", {">": r > 0, ">=": r >= 0, "<": r < 0, "<=": r <= 0}[node[1]])
    if op == "in":
        v = props.get(node[1])
        if v is None:
            return None
        return ("B", (v in node[2]) != node[3])
    raise AssertionError(op)


def render_lit(value) -> str:
    t, v = value
    if t == "S":
        return "'" + v.replace("'", "''") + "'"
    if t == "B":
        return "TRUE" if v else "FALSE"
    if t == "L":
        return f"{v}L" if v > 2**31 - 1 else str(v)
    return repr(v)


def render(node) -> str:
    op = node[0]
    if op == "prop":
        return node[1]
    if op == "lit":
        return "NULL" if node[1] is None else render_lit(node[1])
    if op == "neg":
        return f"-({render(node[1])})"
    if op == "not":
        return f"NOT ({render(node[1])})"
    if op == "cast":
        return render(node[1])
    if op in ("and", "or"):
        return f"({render(node[1])}) {op.upper()} ({render(node[2])})"
    if op == "eq":
        return f"({render(node[1])}) = ({render(node[2])})"
    if op == "cmp":
        return f"({render(node[2])}) {node[1]} ({render(node[3])})"
    if op == "in":
        items = ", ".join("'" + v.replace("'", "''") + "'" for v in node[2])
        return f"{node[1]} {'NOT IN' if node[3] else 'IN'} ({items})"
    raise AssertionError(op)


NAMES = ["a", "b", "c"]
VALUES = ["1", "-1", "0", "10", "9", "2147483648", "-2147483649", "1.5", "1e1", " 2 ", "abc", "true", "TRUE",
          "false", "x'y", "", "NaN", "-0.0", "0x1p3", "٣", "3d", "Infinity", "9223372036854775808"]

props_st = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=3)
prop_st = st.sampled_from(NAMES).map(lambda n: ("prop", n))
int_st = st.one_of(st.integers(0, 20), st.sampled_from([2**31 - 1, 2**31, 2**40, 2**63 - 1]))
number_lit_st = st.one_of(
    int_st.map(lambda v: ("lit", ("I", v) if v <= 2**31 - 1 else ("L", v))),
    st.sampled_from([0.5, 1.5, 10.0, 1e10, 2.0]).map(lambda v: ("lit", ("D", v))))
# operands of <, >: properties, number literals, minus either of them
ordered_st = st.one_of(prop_st, number_lit_st, st.one_of(prop_st, number_lit_st).map(lambda n: ("neg", n)))
# operands of =: anything but a NULL literal; booleans only on the right of other literals (RocketMQ's checks)
eq_right_st = st.one_of(ordered_st, st.sampled_from(VALUES).map(lambda v: ("lit", ("S", v))),
                        st.booleans().map(lambda v: ("lit", ("B", v))))


def bool_st():
    leaf = st.one_of(
        st.tuples(st.just("eq"), st.one_of(ordered_st, st.sampled_from(VALUES).map(lambda v: ("lit", ("S", v)))),
                  eq_right_st),
        st.tuples(st.just("cmp"), st.sampled_from([">", ">=", "<", "<="]), ordered_st, ordered_st),
        st.tuples(st.just("in"), st.sampled_from(NAMES), st.frozensets(st.sampled_from(VALUES), min_size=1,
                                                                         max_size=4).map(sorted), st.booleans()),
        prop_st.map(lambda p: ("cast", p)),
        st.sampled_from([("lit", ("B", True)), ("lit", ("B", False)), ("lit", None)]),
        prop_st.map(lambda p: ("eq", p, ("lit", None))),
    )
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(st.sampled_from(["and", "or"]), inner, inner),
        inner.map(lambda n: ("not", n)),
        # = between boolean expressions; a NULL literal only on the right (written IS NULL), and a property
        # there is a property, not a boolean cast
        st.tuples(st.just("eq"), inner.filter(lambda n: n != ("lit", None) and n[0] != "cast"),
                  inner.filter(lambda n: n[0] != "cast"))), max_leaves=12)


def outcome(fn):
    try:
        v = fn()
    except (RefError, Sql92EvalError):
        return ERROR
    if isinstance(v, tuple):
        v = v[1]
    return v


def _is_null_compare(node) -> bool:
    return node[0] == "eq" and node[2] == ("lit", None)


@settings(max_examples=400, deadline=None)
@given(bool_st(), st.lists(props_st, min_size=1, max_size=4))
def test_compiled_filter_agrees_with_the_reference(tree, samples) -> None:
    text = render_is_null(tree)
    compiled = c(text)
    for props in samples:
        expected = outcome(lambda p=props: ref_eval(tree, p))
        got = outcome(lambda p=props: compiled.evaluate(p))
        assert got == expected, (text, props)
        assert compiled.matches(props) is (expected is True)


def render_is_null(node) -> str:
    """render(), writing ``x = NULL`` nodes as ``x IS NULL`` (the only way to reach doCreateEqual with NULL)."""
    op = node[0]
    if _is_null_compare(node):
        return f"({render_is_null(node[1])}) IS NULL"
    if op in ("and", "or"):
        return f"({render_is_null(node[1])}) {op.upper()} ({render_is_null(node[2])})"
    if op == "not":
        return f"NOT ({render_is_null(node[1])})"
    if op == "eq":
        return f"({render_is_null(node[1])}) = ({render_is_null(node[2])})"
    return render(node)


def minimal(node) -> str:
    """AND/OR/NOT trees rendered with only the parentheses RocketMQ's precedence needs."""
    op = node[0]
    if op == "or":
        return f"{minimal(node[1])} OR {minimal(node[2])}"
    if op == "and":
        parts = [f"({minimal(n)})" if n[0] == "or" else minimal(n) for n in node[1:]]
        return " AND ".join(parts)
    if op == "not":
        return f"NOT ({minimal(node[1])})"
    return node[1]


def logic_st():
    leaf = st.sampled_from(["a = '1'", "b = '1'", "c = '1'", "a IS NULL", "b IN ('1', '2')"]).map(lambda t: ("leaf", t))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(st.sampled_from(["and", "or"]), inner, inner), inner.map(lambda n: ("not", n))), max_leaves=10)


def full(node) -> str:
    if node[0] in ("and", "or"):
        return f"({full(node[1])}) {node[0].upper()} ({full(node[2])})"
    if node[0] == "not":
        return f"NOT ({full(node[1])})"
    return f"({node[1]})"


@settings(max_examples=200, deadline=None)
@given(logic_st(), st.lists(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["1", "2"]), max_size=3),
                            min_size=1, max_size=4))
def test_precedence_without_parentheses(tree, samples) -> None:
    loose, tight = c(minimal(tree)), c(full(tree))
    for props in samples:
        assert loose.evaluate(props) is tight.evaluate(props), (minimal(tree), props)


def test_java_long_repr() -> None:
    assert repr(JavaLong(5)) == "5L"


TOKENS = ["a", "b", "TAGS", " ", "=", "<>", "<", ">", "<=", ">=", "(", ")", ",", "+", "-", "AND", "OR", "NOT",
          "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "'x'", "''", "'", "1", "0", "2.5", "1e3", ".", "9L",
          "--", "\n", "/*", "*/", "!", "$"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join), st.lists(props_st, min_size=1, max_size=3))
def test_any_text_compiles_or_raises_a_parse_error(text, samples) -> None:
    try:
        compiled = c(text)
    except Sql92ParseError as err:
        assert 0 <= err.position <= len(text)
        return
    for props in samples:
        try:
            result = compiled.evaluate(props)
        except Sql92EvalError:
            continue
        assert result in (True, False, None)


def test_the_example_of_features_md() -> None:
    f = c("region IN ('eu', 'uk') AND amount > 100 AND (TAGS = 'paid' OR priority IS NOT NULL)")
    assert f.matches({"region": "eu", "amount": "250", "TAGS": "paid"})
    assert f.matches({"region": "uk", "amount": "101", "priority": "high"})
    assert not f.matches({"region": "eu", "amount": "100", "TAGS": "paid"})
    assert not f.matches({"region": "us", "amount": "500", "TAGS": "paid"})
    assert not f.matches({"region": "eu", "TAGS": "paid"})
    assert not f.matches({"region": "eu", "amount": "99.5", "TAGS": "paid"})
    g = c("amount > 100 OR TAGS = 'paid'")
    assert not g.matches({"amount": "abc", "TAGS": "paid"})
    assert c("TAGS = 'paid' OR amount > 100").matches({"amount": "abc", "TAGS": "paid"})
