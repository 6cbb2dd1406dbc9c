"""SQL92 message filters: RocketMQ 4.9's ``SelectorParser`` grammar with its evaluation semantics.

``compile_sql92(text)`` parses an expression once (a hand-written tokenizer and a recursive-descent parser
that follows the JavaCC grammar rule for rule) into a small tree, checks it as RocketMQ's expression
factories do, and turns it into nested closures over a ``Mapping[str, str]`` of message properties.
``Sql92Filter.matches(properties)`` is then one call per message.

Grammar (RocketMQ 4.9 ``filter/parser/SelectorParser.jj``), loosest binding first::

    or         := and ( OR and )*
    and        := equality ( AND equality )*
    equality   := comparison ( '=' comparison | '<>' comparison | IS NULL | IS NOT NULL )*
    comparison := unary ( ('>' | '>=' | '<' | '<=') unary
                        | [NOT] BETWEEN unary AND unary
                        | [NOT] IN '(' string ( ',' string )* ')' )*
    unary      := '+' unary | '-' unary | NOT unary | primary
    primary    := literal | identifier | '(' or ')'
    literal    := string | decimal | float | TRUE | FALSE | NULL

Keywords are case-insensitive; identifiers are ``[A-Za-z_$][A-Za-z0-9_$]*`` (no dots); strings are in single
quotes with ``''`` for a quote; ``-- comment`` (to a line end) and ``/* comment */`` are skipped. Note the
precedence RocketMQ inherited from ActiveMQ: ``NOT`` binds tighter than comparisons, so ``NOT a = 1`` is
``(NOT a) = 1``; write ``NOT (a = 1)`` or ``a <> 1``.

Values are Java's: ``None`` (null), ``bool``, ``str``, ``int`` (a Java ``Integer``), ``JavaLong`` (a Java
``Long``) and ``float`` (a Java ``Double``). A decimal literal is an Integer when it fits 32 bits, else a Long
(beyond 64 bits: parse error); a literal with a point or an exponent is a Double. Property values are always
strings; a comparison converts the string to the other operand's type with Java's parsers
(``Integer.valueOf`` for an Integer literal, ``Long.valueOf``, ``Double.valueOf``, ``Boolean.valueOf``), two
strings compared with ``<`` ``>`` ``<=`` ``>=`` are both parsed as doubles. A string that does not parse makes
the whole evaluation fail, and a failed evaluation does not match (RocketMQ logs the exception and treats the
message as not matching). A missing property is null: comparisons with null are null, ``AND``/``OR``/``NOT``
are three-valued (Kleene), ``IS NULL`` is true only for a missing property, and a message matches only when
the expression is true.

Checks at compile time, as RocketMQ's factories make them: ``= NULL``/``<> NULL`` (use ``IS NULL``), a string,
boolean or NULL literal or a boolean expression as an operand of ``<`` ``>`` ``<=`` ``>=`` or ``BETWEEN``,
``TRUE``/``FALSE`` compared with a non-boolean literal, ``BETWEEN`` with constant bounds in the wrong order,
``IN`` on anything but a property, and ``NOT``/``AND``/``OR``/the whole expression applied to something that is
not boolean (a property is accepted and is "true" only if it holds a Java Boolean, which a string never is).

Deviations, all toward rejecting less or more clearly: RocketMQ silently ignores any text after a complete
expression (its grammar has no end-of-input rule: ``a = 1 xyz`` filters on ``a = 1``); here it is a parse
error. RocketMQ rejects the literal ``0.0`` (its float check is ``value < Double.MIN_VALUE``); here it is
zero. ``!=`` is not RocketMQ SQL92 and is refused with a hint to use ``<>``. RocketMQ 5.1.3 added
``CONTAINS``/``STARTSWITH``/``ENDSWITH``; 4.9 has no such operators and neither has this module (those words
remain ordinary property names).

Bounds: ``MAX_EXPRESSION_LENGTH`` characters, ``MAX_DEPTH`` levels of nesting (parentheses, prefix operators
and chained comparisons; ``AND``/``OR`` chains are flattened and may be of any length), ``MAX_IN_LIST``
strings per ``IN``. Every failure raises ``Sql92ParseError`` with the position (``line``, ``column``, 1-based,
and ``position``, a 0-based offset).
"""
from __future__ import annotations

import math
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_IN_LIST",
    "JavaLong",
    "Sql92EvalError",
    "Sql92Filter",
    "Sql92FilterCache",
    "Sql92ParseError",
    "compile_sql92",
]

MAX_EXPRESSION_LENGTH = 64 * 1024
MAX_DEPTH = 64
MAX_IN_LIST = 4096

_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


class JavaLong(int):
    """A Java ``Long`` value; a plain ``int`` stands for a Java ``Integer``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}L"


class Sql92ParseError(ValueError):
    """An expression that does not compile; ``position`` is a 0-based offset, ``line``/``column`` 1-based."""

    def __init__(self, message: str, expression: str = "", position: int = 0) -> None:
        self.reason = message
        self.expression = expression
        self.position = position
        before = expression[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1) + 1
        super().__init__(f"{message} at line {self.line}, column {self.column}")


class Sql92EvalError(Exception):
    """Evaluation failed for one message (RocketMQ: an exception inside ``evaluate``); it does not match."""


# -- Java value semantics ----------------------------------------------------------------------------

_B, _I, _L, _D, _S = range(5)
_KINDS = {bool: _B, int: _I, JavaLong: _L, float: _D, str: _S}


def _kind(value: Any) -> int:
    kind = _KINDS.get(value.__class__)
    if kind is None:
        raise Sql92EvalError(f"unsupported value {value!r}")
    return kind


def _java_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def _parse_integral(text: str, lo: int, hi: int, what: str) -> int:
    """Java ``Integer.valueOf``/``Long.valueOf``: optional sign, decimal digits (any Unicode Nd), no blanks."""
    start = 1 if text[:1] in ("+", "-") else 0
    digits = text[start:]
    if not digits or not digits.isdecimal():
        raise Sql92EvalError(f"NumberFormatException: For input string: {text!r} ({what})")
    digits = digits.lstrip("0") or "0"
    if len(digits) > 20:
        raise Sql92EvalError(f"NumberFormatException: For input string: {text!r} ({what} out of range)")
    value = int(digits)
    if start and text[0] == "-":
        value = -value
    if not lo <= value <= hi:
        raise Sql92EvalError(f"NumberFormatException: For input string: {text!r} ({what} out of range)")
    return value


def _parse_int(text: str) -> int:
    return _parse_integral(text, _INT_MIN, _INT_MAX, "Integer")


def _parse_long(text: str) -> JavaLong:
    return JavaLong(_parse_integral(text, _LONG_MIN, _LONG_MAX, "Long"))


_JAVA_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?"
    r"|0[xX](?:[0-9a-fA-F]+\.?|[0-9a-fA-F]*\.[0-9a-fA-F]+)[pP][+-]?[0-9]+[fFdD]?)")


def _parse_double(text: str) -> float:
    """Java ``Double.valueOf``: trimmed, NaN/Infinity, decimal or hex, an optional f/F/d/D suffix."""
    body = _java_trim(text)
    if _JAVA_DOUBLE.fullmatch(body) is None:
        raise Sql92EvalError(f"NumberFormatException: For input string: {text!r} (Double)")
    if body[-1] in "fFdD":
        body = body[:-1]
    if "x" in body or "X" in body:
        return float.fromhex(body)
    return float(body)


def _parse_bool(text: str) -> bool:
    """Java ``Boolean.valueOf``: true iff ``"true"`` ignoring case."""
    return len(text) == 4 and text.lower() == "true"


def _compare_double(a: float, b: float) -> int:
    """Java ``Double.compare``: -0.0 < 0.0, NaN equal to itself and above everything."""
    if a < b:
        return -1
    if a > b:
        return 1
    if a == b:
        if a == 0.0:
            sa, sb = math.copysign(1.0, a), math.copysign(1.0, b)
            return (sa > sb) - (sa < sb)
        return 0
    a_nan, b_nan = math.isnan(a), math.isnan(b)
    if a_nan and b_nan:
        return 0
    return 1 if a_nan else -1


def _compare(lv: Any, rv: Any) -> int:
    """RocketMQ ``ComparisonExpression.__compare`` with string conversion on (as ``SelectorParser.parse`` sets)."""
    kl, kr = _kind(lv), _kind(rv)
    if kl != kr:
        if kl == _B:
            if kr == _S:
                # Java casts the Boolean to String here: a ClassCastException
                raise Sql92EvalError("ClassCastException: a Boolean compared with a String")
            return -1
        if kl == _I or kl == _L:
            if kr == _D:
                lv = float(lv)
            elif kr == _S:
                rv = _parse_int(rv) if kl == _I else _parse_long(rv)
            elif kr == _B:
                return -1
        elif kl == _D:
            if kr == _I or kr == _L:
                rv = float(rv)
            elif kr == _S:
                rv = _parse_double(rv)
            else:
                return -1
        else:   # a String on the left
            if kr == _B:
                lv = _parse_bool(lv)
            elif kr == _I:
                lv = _parse_int(lv)
            elif kr == _L:
                lv = _parse_long(lv)
            else:
                lv = _parse_double(lv)
    if lv.__class__ is float:
        return _compare_double(lv, rv)
    return (lv > rv) - (lv < rv)


def _negate(value: Any) -> Any:
    """``UnaryExpression.createNegate``: numbers negated with Java overflow, anything else null."""
    cls = value.__class__
    if cls is int:
        return ((-value - _INT_MIN) & 0xFFFFFFFF) + _INT_MIN
    if cls is JavaLong:
        return JavaLong(((-value - _LONG_MIN) & 0xFFFFFFFFFFFFFFFF) + _LONG_MIN)
    if cls is float:
        return -value
    return None


# -- tokens ------------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"NOT", "AND", "OR", "BETWEEN", "IN", "TRUE", "FALSE", "NULL", "IS"})
_SKIP = re.compile(r"(?:[ \t\n\r\f]+|--[^\n\r]*[\n\r]|/\*[^*]*\*+(?:[^/*][^*]*\*+)*/)+")
_FLOAT = re.compile(r"[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*[lL]?")
_STRING = re.compile(r"'(?:''|[^'])*'")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_OPERATORS = ("<>", "<=", ">=", "=", "<", ">", "(", ",", ")", "+", "-")

# token kinds besides keywords and operators (which are their own text)
_T_DECIMAL, _T_FLOAT, _T_STRING, _T_ID, _T_EOF = "decimal", "float", "string", "identifier", "end of input"


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, image, offset) triples, ending with an end-of-input token."""
    tokens: list[tuple[str, str, int]] = []
    pos, n = 0, len(text)
    while True:
        m = _SKIP.match(text, pos)
        if m is not None:
            pos = m.end()
        if pos >= n:
            tokens.append((_T_EOF, "", n))
            return tokens
        ch = text[pos]
        if ch.isascii() and (ch.isdigit() or ch == "."):
            f = _FLOAT.match(text, pos)
            d = _DECIMAL.match(text, pos)
            if f is not None and (d is None or f.end() > d.end()):
                tokens.append((_T_FLOAT, f.group(), pos))
                pos = f.end()
            elif d is not None:
                tokens.append((_T_DECIMAL, d.group(), pos))
                pos = d.end()
            else:
                raise Sql92ParseError("unexpected character '.'", text, pos)
            continue
        if ch == "'":
            m = _STRING.match(text, pos)
            if m is None:
                raise Sql92ParseError("unterminated string literal", text, pos)
            tokens.append((_T_STRING, m.group(), pos))
            pos = m.end()
            continue
        m = _IDENT.match(text, pos)
        if m is not None:
            image = m.group()
            upper = image.upper()
            tokens.append((upper if upper in _KEYWORDS else _T_ID, image, pos))
            pos = m.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, pos):
                tokens.append((op, op, pos))
                pos += len(op)
                break
        else:
            if text.startswith("!=", pos):
                raise Sql92ParseError("'!=' is not RocketMQ SQL92, use '<>'", text, pos)
            if text.startswith("/*", pos):
                raise Sql92ParseError("unterminated comment", text, pos)
            raise Sql92ParseError(f"unexpected character {ch!r}", text, pos)


# -- syntax tree -------------------------------------------------------------------------------------

class _Node:
    """A RocketMQ expression object. ``boolean``: a ``BooleanExpression``; ``constant``: a ``ConstantExpression``."""

    __slots__ = ("depth", "pos")
    boolean = False
    constant = False

    def children(self) -> tuple[_Node, ...]:
        return ()


class _Const(_Node):
    __slots__ = ("is_boolean", "value")
    constant = True

    def __init__(self, value: Any, pos: int, is_boolean: bool = False) -> None:
        self.value, self.pos, self.is_boolean = value, pos, is_boolean

    @property   # TRUE, FALSE and NULL are BooleanConstantExpressions
    def boolean(self) -> bool:   # type: ignore[override]
        return self.is_boolean


class _Prop(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str, pos: int) -> None:
        self.name, self.pos = name, pos


class _Neg(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node, pos: int) -> None:
        self.operand, self.pos = operand, pos

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)


class _Not(_Node):
    __slots__ = ("operand",)
    boolean = True

    def __init__(self, operand: _Node, pos: int) -> None:
        self.operand, self.pos = operand, pos

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)


class _Cast(_Node):
    """``UnaryExpression.createBooleanCast`` of a property used where a boolean is expected."""
    __slots__ = ("prop",)
    boolean = True

    def __init__(self, prop: _Prop) -> None:
        self.prop, self.pos = prop, prop.pos

    def children(self) -> tuple[_Node, ...]:
        return (self.prop,)


class _Logic(_Node):
    __slots__ = ("is_and", "operands")
    boolean = True

    def __init__(self, is_and: bool, operands: list[_Node], pos: int) -> None:
        self.is_and, self.operands, self.pos = is_and, operands, pos

    def children(self) -> tuple[_Node, ...]:
        return tuple(self.operands)


class _Equal(_Node):
    """``doCreateEqual``: also IS NULL (right = the NULL constant)."""
    __slots__ = ("left", "right")
    boolean = True

    def __init__(self, left: _Node, right: _Node, pos: int) -> None:
        self.left, self.right, self.pos = left, right, pos

    def children(self) -> tuple[_Node, ...]:
        return (self.left, self.right)


class _Compare(_Node):
    __slots__ = ("left", "op", "right")
    boolean = True

    def __init__(self, op: str, left: _Node, right: _Node, pos: int) -> None:
        self.op, self.left, self.right, self.pos = op, left, right, pos

    def children(self) -> tuple[_Node, ...]:
        return (self.left, self.right)


class _In(_Node):
    __slots__ = ("negated", "prop", "values")
    boolean = True

    def __init__(self, prop: _Prop, values: list[str], negated: bool, pos: int) -> None:
        self.prop, self.values, self.negated, self.pos = prop, values, negated, pos

    def children(self) -> tuple[_Node, ...]:
        return (self.prop,)


def _describe(node: _Node) -> str:
    if isinstance(node, _Const):
        v = node.value
        if v is None:
            return "NULL"
        if v.__class__ is bool:
            return "TRUE" if v else "FALSE"
        if v.__class__ is str:
            return "'" + v.replace("'", "''") + "'"
        return repr(v)
    if isinstance(node, _Prop):
        return node.name
    return "a boolean expression" if node.boolean else "an expression"


# -- parser ------------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.nesting = 0

    # token helpers
    def peek(self, ahead: int = 0) -> str:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)][0]

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        if tok[0] != _T_EOF:
            self.i += 1
        return tok

    def error(self, message: str, pos: int | None = None) -> Sql92ParseError:
        return Sql92ParseError(message, self.text, self.tokens[self.i][2] if pos is None else pos)

    def unexpected(self, expecting: str) -> Sql92ParseError:
        kind, image, pos = self.tokens[self.i]
        shown = "end of input" if kind == _T_EOF else repr(image)
        return Sql92ParseError(f"unexpected {shown}, expecting {expecting}", self.text, pos)

    def expect(self, kind: str, expecting: str) -> tuple[str, str, int]:
        if self.peek() != kind:
            raise self.unexpected(expecting)
        return self.take()

    def node(self, node: _Node) -> _Node:
        children = node.children()
        node.depth = 1 + max((c.depth for c in children), default=0)
        if node.depth > MAX_DEPTH:
            raise Sql92ParseError(f"expression nested deeper than {MAX_DEPTH} levels", self.text, node.pos)
        return node

    def enter(self, pos: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise Sql92ParseError(f"expression nested deeper than {MAX_DEPTH} levels", self.text, pos)

    # RocketMQ's checks
    def as_boolean(self, node: _Node) -> _Node:
        if node.boolean:
            return node
        if isinstance(node, _Prop):
            return self.node(_Cast(node))
        raise self.error(f"expression will not result in a boolean value: {_describe(node)}", node.pos)

    def check_ordered(self, node: _Node) -> None:
        """``checkLessThanOperand``."""
        if isinstance(node, _Const):
            if node.value.__class__ in (int, JavaLong, float):
                return
            raise self.error(f"value {_describe(node)} cannot be compared", node.pos)
        if node.boolean:
            raise self.error("a boolean expression cannot be compared with '<', '<=', '>', '>='", node.pos)

    def check_equal(self, left: _Node, right: _Node) -> None:
        """``checkEqualOperand`` on both sides, then ``checkEqualOperandCompatability``."""
        for side in (left, right):
            if isinstance(side, _Const) and side.value is None:
                raise self.error("NULL cannot be compared with '=' or '<>', use IS NULL / IS NOT NULL", side.pos)
        if isinstance(left, _Const) and isinstance(right, _Const) and left.is_boolean and not right.is_boolean:
            raise self.error(f"{_describe(left)} cannot be compared with {_describe(right)}", right.pos)

    def compare(self, op: str, left: _Node, right: _Node, pos: int) -> _Node:
        self.check_ordered(left)
        self.check_ordered(right)
        return self.node(_Compare(op, left, right, pos))

    def logic(self, is_and: bool, left: _Node, right: _Node, pos: int) -> _Node:
        """AND/OR, flattened: a nested operand of the same kind has the same truth table and evaluation
        order as its operands inline (left to right, stopping at the first FALSE/TRUE)."""
        left, right = self.as_boolean(left), self.as_boolean(right)
        added = right.operands if isinstance(right, _Logic) and right.is_and == is_and else [right]
        if isinstance(left, _Logic) and left.is_and == is_and:   # each node has one parent: extend in place
            left.operands.extend(added)
            left.depth = max(left.depth, 1 + max(n.depth for n in added))
            if left.depth > MAX_DEPTH:
                raise Sql92ParseError(f"expression nested deeper than {MAX_DEPTH} levels", self.text, left.pos)
            return left
        return self.node(_Logic(is_and, [left, *added], left.pos))

    # grammar
    def parse(self) -> _Node:
        node = self.or_expr()
        if self.peek() != _T_EOF:
            raise self.unexpected("an operator or end of input")
        return self.as_boolean(node)

    def or_expr(self) -> _Node:
        left = self.and_expr()
        while self.peek() == "OR":
            pos = self.take()[2]
            left = self.logic(False, left, self.and_expr(), pos)
        return left

    def and_expr(self) -> _Node:
        left = self.equality()
        while self.peek() == "AND":
            pos = self.take()[2]
            left = self.logic(True, left, self.equality(), pos)
        return left

    def equality(self) -> _Node:
        left = self.comparison()
        while True:
            kind = self.peek()
            if kind in ("=", "<>"):
                pos = self.take()[2]
                right = self.comparison()
                self.check_equal(left, right)
                left = self.node(_Equal(left, right, pos))
                if kind == "<>":
                    left = self.node(_Not(left, pos))
            elif kind == "IS":
                pos = self.take()[2]
                negated = self.peek() == "NOT"
                if negated:
                    self.take()
                self.expect("NULL", "NULL" if negated else "NULL or NOT NULL")
                left = self.node(_Equal(left, self.node(_Const(None, pos, True)), pos))
                if negated:
                    left = self.node(_Not(left, pos))
            else:
                return left

    def comparison(self) -> _Node:
        left = self.unary()
        while True:
            kind = self.peek()
            if kind in (">", ">=", "<", "<="):
                pos = self.take()[2]
                left = self.compare(kind, left, self.unary(), pos)
                continue
            negated = False
            if kind == "NOT":
                if self.peek(1) not in ("BETWEEN", "IN"):
                    self.take()
                    raise self.unexpected("BETWEEN or IN after NOT")
                negated = True
                self.take()
                kind = self.peek()
            if kind == "BETWEEN":
                pos = self.take()[2]
                low = self.unary()
                self.expect("AND", "AND of BETWEEN")
                high = self.unary()
                left = self.between(left, low, high, negated, pos)
            elif kind == "IN":
                pos = self.take()[2]
                left = self.in_list(left, negated, pos)
            else:
                return left

    def between(self, value: _Node, low: _Node, high: _Node, negated: bool, pos: int) -> _Node:
        if negated:   # createNotBetween: value < low OR value > high, no check of the bounds' order
            return self.logic(False, self.compare("<", value, low, pos), self.compare(">", value, high, pos), pos)
        if isinstance(low, _Const) and isinstance(high, _Const):
            if low.value is None or high.value is None:
                raise self.error("illegal values of BETWEEN: the bounds can not be NULL", pos)
            try:
                order = _compare(high.value, low.value)
            except Sql92EvalError as exc:
                raise self.error(f"illegal values of BETWEEN: {exc}", pos) from None
            if order < 0:
                raise self.error(f"illegal values of BETWEEN: the lower bound {_describe(low)} is greater than "
                                 f"the upper bound {_describe(high)}", low.pos)
        return self.logic(True, self.compare(">=", value, low, pos), self.compare("<=", value, high, pos), pos)

    def in_list(self, left: _Node, negated: bool, pos: int) -> _Node:
        self.expect("(", "'(' after IN")
        values = [self.string()]
        while self.peek() == ",":
            self.take()
            values.append(self.string())
            if len(values) > MAX_IN_LIST:
                raise self.error(f"more than {MAX_IN_LIST} values in IN")
        self.expect(")", "',' or ')' in the IN list")
        if not isinstance(left, _Prop):
            raise self.error(f"IN expects a property on its left, got {_describe(left)}", left.pos)
        return self.node(_In(left, values, negated, pos))

    def string(self) -> str:
        return self.expect(_T_STRING, "a string literal")[1][1:-1].replace("''", "'")

    def unary(self) -> _Node:
        kind = self.peek()
        if kind in ("+", "-", "NOT"):
            pos = self.take()[2]
            self.enter(pos)
            operand = self.unary()
            self.nesting -= 1
            if kind == "+":
                return operand
            if kind == "-":
                return self.node(_Neg(operand, pos))
            return self.node(_Not(self.as_boolean(operand), pos))
        return self.primary()

    def primary(self) -> _Node:
        kind, image, pos = self.tokens[self.i]
        if kind == _T_ID:
            self.take()
            return self.node(_Prop(image, pos))
        if kind == "(":
            self.take()
            self.enter(pos)
            node = self.or_expr()
            self.expect(")", "')'")
            self.nesting -= 1
            return node
        if kind == _T_STRING:
            return self.node(_Const(self.string(), pos))
        if kind == _T_DECIMAL:
            self.take()
            digits = image[:-1] if image[-1] in "lL" else image
            value = int(digits) if len(digits) <= 19 else _LONG_MAX + 1
            if value > _LONG_MAX:
                raise self.error(f"decimal literal {image} is out of the Long range", pos)
            return self.node(_Const(value if value <= _INT_MAX else JavaLong(value), pos))
        if kind == _T_FLOAT:
            self.take()
            number = float(image)
            if math.isinf(number):
                raise self.error(f"{image} is greater than {1.7976931348623157e308!r}", pos)
            return self.node(_Const(number, pos))
        if kind in ("TRUE", "FALSE", "NULL"):
            self.take()
            return self.node(_Const(None if kind == "NULL" else kind == "TRUE", pos, True))
        raise self.unexpected("a property, a literal, '(' or a prefix operator")


# -- evaluation ----------------------------------------------------------------------------------------

_Eval = Callable[[Mapping[str, str]], Any]

_TESTS: dict[str, Callable[[int], bool]] = {
    ">": lambda c: c > 0, ">=": lambda c: c >= 0, "<": lambda c: c < 0, "<=": lambda c: c <= 0}
_INT_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_PARSERS: dict[type, Callable[[str], Any]] = {int: _parse_int, JavaLong: _parse_long, float: _parse_double}


def _constant(node: _Node) -> tuple[bool, Any]:
    """(True, value) when a node's value is known when compiling: a literal, or minus (minus ...) a literal."""
    if isinstance(node, _Const):
        return True, node.value
    if isinstance(node, _Neg):
        known, value = _constant(node.operand)
        if known:
            return True, None if value is None else _negate(value)
    return False, None


def _compile(node: _Node) -> _Eval:
    known, value = _constant(node)
    if known:
        return lambda p: value
    if isinstance(node, _Prop):
        name = node.name
        return lambda p: p.get(name)
    if isinstance(node, _Neg):
        inner = _compile(node.operand)

        def neg(p: Mapping[str, str]) -> Any:
            v = inner(p)
            return None if v is None else _negate(v)
        return neg
    if isinstance(node, _Not):
        inner = _compile(node.operand)

        def not_(p: Mapping[str, str]) -> Any:
            v = inner(p)
            return None if v is None else not v
        return not_
    if isinstance(node, _Cast):
        name = node.prop.name

        def cast(p: Mapping[str, str]) -> Any:
            v = p.get(name)
            return None if v is None else (v if v.__class__ is bool else False)
        return cast
    if isinstance(node, _Logic):
        return _compile_logic(node)
    if isinstance(node, _Equal):
        return _compile_equal(node)
    if isinstance(node, _Compare):
        return _compile_compare(node)
    if isinstance(node, _In):
        return _compile_in(node)
    raise AssertionError(f"unknown node {node!r}")


def _compile_logic(node: _Logic) -> _Eval:
    parts = tuple(_compile(o) for o in node.operands)
    if node.is_and:
        def and_(p: Mapping[str, str]) -> Any:
            result: Any = True
            for part in parts:
                v = part(p)
                if v is False:
                    return False
                if v is None:
                    result = None
            return result
        return and_

    def or_(p: Mapping[str, str]) -> Any:
        result: Any = False
        for part in parts:
            v = part(p)
            if v is True:
                return True
            if v is None:
                result = None
        return result
    return or_


def _equal(lv: Any, rv: Any) -> Any:
    if lv is None:
        return True if rv is None else None
    if rv is None:
        return False
    return _compare(lv, rv) == 0


def _compile_equal(node: _Equal) -> _Eval:
    left, right = node.left, node.right
    known, const = _constant(right)
    if isinstance(left, _Prop) and known:
        name = left.name
        if const is None:                                       # IS NULL
            return lambda p: p.get(name) is None
        if const.__class__ is str:
            def eq_str(p: Mapping[str, str]) -> Any:
                v = p.get(name)
                if v is None:
                    return None
                return v == const if v.__class__ is str else _compare(v, const) == 0
            return eq_str
        parse = _PARSERS.get(const.__class__)
        if parse is not None and const.__class__ is not float:
            def eq_integral(p: Mapping[str, str]) -> Any:
                v = p.get(name)
                if v is None:
                    return None
                return parse(v) == const if v.__class__ is str else _compare(v, const) == 0
            return eq_integral
    fl, fr = _compile(left), _compile(right)
    return lambda p: _equal(fl(p), fr(p))


def _compile_compare(node: _Compare) -> _Eval:
    test = _TESTS[node.op]
    left, right = node.left, node.right
    known, const = _constant(right)
    if isinstance(left, _Prop) and known and const.__class__ in _PARSERS:
        name = left.name
        parse = _PARSERS[const.__class__]
        if const.__class__ is float:
            def cmp_double(p: Mapping[str, str]) -> Any:
                v = p.get(name)
                if v is None:
                    return None
                return test(_compare_double(parse(v), const) if v.__class__ is str else _compare(v, const))
            return cmp_double
        op = _INT_OPS[node.op]

        def cmp_integral(p: Mapping[str, str]) -> Any:
            v = p.get(name)
            if v is None:
                return None
            return op(parse(v), const) if v.__class__ is str else test(_compare(v, const))
        return cmp_integral
    fl, fr = _compile(left), _compile(right)

    def cmp(p: Mapping[str, str]) -> Any:
        lv = fl(p)
        if lv is None:
            return None
        rv = fr(p)
        if rv is None:
            return None
        if lv.__class__ is str and rv.__class__ is str:
            return test(_compare_double(_parse_double(lv), _parse_double(rv)))
        return test(_compare(lv, rv))
    return cmp


def _compile_in(node: _In) -> _Eval:
    name, negated = node.prop.name, node.negated
    values = frozenset(node.values)

    def in_(p: Mapping[str, str]) -> Any:
        v = p.get(name)
        if v is None or v.__class__ is not str:
            return None
        return (v in values) != negated
    return in_


def _property_names(root: _Node) -> frozenset[str]:
    names: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, _Prop):
            names.add(node.name)
        stack.extend(node.children())
    return frozenset(names)


class Sql92Filter:
    """A compiled SQL92 expression. ``matches(properties)``: True when the expression is TRUE for them."""

    __slots__ = ("_eval", "expression", "property_names")

    def __init__(self, expression: str, root: _Node) -> None:
        self.expression = expression
        self.property_names = _property_names(root)
        self._eval = _compile(root)

    def evaluate(self, properties: Mapping[str, str]) -> bool | None:
        """TRUE, FALSE or None (SQL null); raises Sql92EvalError where RocketMQ's evaluation throws."""
        return self._eval(properties)

    def matches(self, properties: Mapping[str, str]) -> bool:
        try:
            return self._eval(properties) is True
        except Sql92EvalError:
            return False

    def __repr__(self) -> str:
        return f"Sql92Filter({self.expression!r})"


def compile_sql92(expression: str) -> Sql92Filter:
    """Parse, check and compile ``expression``; raises Sql92ParseError (with the position) if it is not valid."""
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise Sql92ParseError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters", expression,
                              MAX_EXPRESSION_LENGTH)
    return Sql92Filter(expression, _Parser(expression).parse())


class Sql92FilterCache:
    """Compiled filters by expression text, least recently used dropped beyond ``max_entries``.

    Parse failures are cached as well (as RocketMQ's parse cache does), so a consumer that keeps pulling
    with a bad expression does not make the broker parse it again each time.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Sql92Filter | tuple[str, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, expression: str) -> Sql92Filter:
        entry = self._entries.get(expression)
        if entry is None:
            try:
                entry = compile_sql92(expression)
            except Sql92ParseError as exc:
                entry = (exc.reason, exc.position)
            self._entries[expression] = entry
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(expression)
        if isinstance(entry, tuple):
            raise Sql92ParseError(entry[0], expression, entry[1])
        return entry
