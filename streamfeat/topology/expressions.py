"""The ``where`` language: a small, safe boolean expression over one event's fields.

Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | STRING | "true" | "false" | "null" | FIELD
                | "[" (expr ("," expr)*)? "]" | "(" expr ")"

``FIELD`` is a name (``status``) or a dotted path into nested mappings
(``payment.method``). The text is tokenized and parsed here (a Pratt parser)
and compiled once into nested closures; it is never given to ``eval``,
``exec``, ``compile`` or ``ast``.

Semantics: SQL's three-valued logic (contract section 2). Every expression has a value
or is null; ``null`` is also the truth value *unknown*. An event is kept only when the
whole expression is ``true``; ``false`` and unknown drop it. Nothing raises on bad data.

- Values are of one kind each: null, boolean, number (integers and floats alike; a
  boolean is not a number), string, list, object. A missing field, or a path through a
  value that is not an object, is null.
- Comparisons (``== != < <= > >=``) are unknown when either side is null or the two
  sides are of different kinds (``1 == true``, ``'1' < 2``, ``[1] < 2`` are all
  unknown). Numbers compare by value (IEEE 754 for floats: NaN equals nothing),
  strings by code point, booleans with ``false < true``. Lists and objects only have
  ``==`` and ``!=``: equal when they have the same items (keys) and the items are equal
  kind by kind; inside them ``null`` equals ``null``. Values nested more than 64 deep
  are not compared (unknown).
- ``x == null`` and ``x != null``, with the literal ``null``, are SQL's ``x IS NULL`` and
  ``x IS NOT NULL``: true or false, never unknown. Any other comparison with a null,
  e.g. ``x == y`` where ``y`` is missing, is unknown.
- ``x in [a, b, ...]`` is ``x == a or x == b or ...``: true when some item equals ``x``;
  false when every item is of ``x``'s kind and none equals it; unknown otherwise (``x``
  null, or some item null or of another kind: ``2 in ['a', 2]`` is true but
  ``3 in ['a', 2]`` is unknown). ``x in []`` is false. When the right side is a string,
  ``in`` tests for a substring (both sides strings, else unknown); any other right side
  gives unknown. ``x not in y`` is ``not (x in y)``.
- Arithmetic (``+ - * / %``, unary ``-``) takes two numbers (``+`` also joins two
  strings); anything else gives null: a null operand, mismatched kinds (``'a' * 2``,
  ``true + 1``), a division by zero, a result too large for a float. ``/`` always
  divides exactly (``7 / 2`` is 3.5); ``%`` has the sign of the divisor, as Python's.
- ``and``, ``or`` and ``not`` are Kleene's: ``false and unknown`` is false, ``true or
  unknown`` is true, ``not unknown`` is unknown. Only ``true`` and ``false`` are truth
  values: a bare field or any other value that is not a boolean (``where: "flag"`` with
  ``flag`` missing, ``1``, or ``'yes'``) is unknown.

Comparisons do not chain: write ``0 < x and x < 10``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from streamfeat.errors import StreamfeatError

__all__ = [
    "ExpressionError",
    "FieldUse",
    "Predicate",
    "WherePredicate",
    "canonical_where",
    "compile_where",
    "field_uses",
    "fields_of",
]

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
_Eval: TypeAlias = Callable[[Mapping[str, Any]], Any]


class ExpressionError(StreamfeatError):
    """A ``where`` expression does not parse.

    ``column`` is the 1-based position of the problem in ``text``; fix the
    expression there (the message says what was expected).
    """

    def __init__(self, text: str, column: int, reason: str) -> None:
        self.text = text
        self.column = column
        self.reason = reason
        super().__init__(f"column {column}: {reason}")


# --------------------------------------------------------------------------- tokens

_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_TWO_CHAR_OPS: Final = frozenset({"==", "!=", "<=", ">="})
_ONE_CHAR_OPS: Final = frozenset("<>+-*/%()[],")
_MISTAKES: Final = {
    "=": "use '==' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "!": "use 'not' (or '!=')",
}
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num" | "str" | "name" | "kw" | "op" | "end"
    value: Any
    col: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        col = i + 1
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i
            while j < n and text[j].isdigit():
                j += 1
            is_float = False
            if j < n and text[j] == "." and j + 1 < n and text[j + 1].isdigit():
                is_float = True
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k].isdigit():
                    is_float = True
                    j = k
                    while j < n and text[j].isdigit():
                        j += 1
            if j < n and (text[j].isalpha() or text[j] == "_"):
                raise ExpressionError(text, j + 1, f"unexpected {text[j]!r} after a number")
            number: int | float = float(text[i:j]) if is_float else int(text[i:j])
            if isinstance(number, float) and math.isinf(number):
                raise ExpressionError(text, col, "number too large; use a smaller literal")
            tokens.append(_Token("num", number, col))
            i = j
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            if word in _KEYWORDS:
                tokens.append(_Token("kw", word, col))
                i = j
                continue
            path = [word]
            while j < n and text[j] == ".":
                k = j + 1
                if not (k < n and (text[k].isalpha() or text[k] == "_")):
                    raise ExpressionError(text, k + 1, "expected a field name after '.'")
                j = k
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                path.append(text[k:j])
            tokens.append(_Token("name", tuple(path), col))
            i = j
        elif c in "'\"":
            j = i + 1
            out: list[str] = []
            while True:
                if j >= n:
                    raise ExpressionError(text, col, f"unterminated string; close it with {c}")
                d = text[j]
                if d == c:
                    break
                if d == "\\":
                    if j + 1 >= n or text[j + 1] not in _ESCAPES:
                        raise ExpressionError(
                            text, j + 1, "unknown escape; use \\\\ \\' \\\" \\n \\t or \\r"
                        )
                    out.append(_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                out.append(d)
                j += 1
            tokens.append(_Token("str", "".join(out), col))
            i = j + 1
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            tokens.append(_Token("op", text[i : i + 2], col))
            i += 2
        elif c in _ONE_CHAR_OPS:
            tokens.append(_Token("op", c, col))
            i += 1
        else:
            hint = _MISTAKES.get(c, "remove it")
            raise ExpressionError(text, col, f"unexpected character {c!r}; {hint}")
    tokens.append(_Token("end", None, n + 1))
    return tokens


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class _Const:
    value: Any


@dataclass(frozen=True, slots=True)
class _Field:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str  # "-" | "not"
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str
    left: _Node
    right: _Node


_Node: TypeAlias = _Const | _Field | _List | _Unary | _Binary

# Binding powers (higher binds tighter); comparisons are non-associative.
_OR, _AND, _NOT, _CMP, _SUM, _PROD, _NEG = 10, 20, 30, 40, 50, 60, 70
_INFIX: Final = {
    "or": _OR,
    "and": _AND,
    "==": _CMP, "!=": _CMP, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP,
    "in": _CMP, "not in": _CMP,
    "+": _SUM, "-": _SUM,
    "*": _PROD, "/": _PROD, "%": _PROD,
}  # fmt: skip
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"})
_LITERALS: Final = {"true": True, "false": False, "null": None}
_MAX_DEPTH: Final = 64


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "end of expression"
    if tok.kind == "name":
        return f"field {'.'.join(tok.value)!r}"
    if tok.kind == "str":
        return f"string {tok.value!r}"
    return repr(tok.value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def fail(self, tok: _Token, reason: str) -> ExpressionError:
        return ExpressionError(self.text, tok.col, reason)

    def peek_infix(self) -> tuple[str, int] | None:
        tok = self.tokens[self.pos]
        if tok.kind in ("op", "kw") and tok.value in _INFIX:
            return tok.value, _INFIX[tok.value]
        if tok.kind == "kw" and tok.value == "not":
            nxt = self.tokens[self.pos + 1]
            if nxt.kind == "kw" and nxt.value == "in":
                return "not in", _CMP
        return None

    def parse(self) -> _Node:
        if self.tokens[0].kind == "end":
            raise self.fail(
                self.tokens[0], "empty expression; write a condition such as status == 'completed'"
            )
        node = self.expr(0)
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            raise self.fail(
                tok, f"unexpected {_describe(tok)}; expected an operator, 'and', 'or' or the end"
            )
        return node

    def expr(self, min_bp: int) -> _Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(self.tokens[self.pos], "expression nested too deeply; simplify it")
        try:
            return self.expr_inner(min_bp)
        finally:
            self.depth -= 1

    def expr_inner(self, min_bp: int) -> _Node:
        left = self.prefix()
        while True:
            infix = self.peek_infix()
            if infix is None:
                return left
            op, bp = infix
            if bp <= min_bp:
                if bp == _CMP and min_bp == _CMP:
                    tok = self.tokens[self.pos]
                    raise self.fail(tok, "comparisons do not chain; write 'a < b and b < c'")
                return left
            self.pos += 2 if op == "not in" else 1
            right = self.expr(bp)
            left = _Binary(op, left, right)

    def prefix(self) -> _Node:
        tok = self.tokens[self.pos]
        self.pos += 1
        if tok.kind in ("num", "str"):
            return _Const(tok.value)
        if tok.kind == "name":
            return _Field(tok.value)
        if tok.kind == "kw":
            if tok.value in _LITERALS:
                return _Const(_LITERALS[tok.value])
            if tok.value == "not":
                return _Unary("not", self.expr(_NOT - 1))
        if tok.kind == "op":
            if tok.value == "-":
                operand = self.expr(_NEG)
                if isinstance(operand, _Const) and _is_number(operand.value):
                    return _Const(-operand.value)
                return _Unary("-", operand)
            if tok.value == "(":
                inner = self.expr(0)
                self.expect(")", tok)
                return inner
            if tok.value == "[":
                items: list[_Node] = []
                if not self.at(")") and not self.at("]"):
                    items.append(self.expr(0))
                    while self.at(","):
                        self.pos += 1
                        items.append(self.expr(0))
                self.expect("]", tok)
                return _List(tuple(items))
        raise self.fail(
            tok,
            f"unexpected {_describe(tok)}; expected a value "
            "(field, number, 'string', true, false, null, [list] or '(')",
        )

    def at(self, op: str) -> bool:
        tok = self.tokens[self.pos]
        return tok.kind == "op" and tok.value == op

    def expect(self, op: str, opener: _Token) -> None:
        if not self.at(op):
            tok = self.tokens[self.pos]
            raise self.fail(
                tok,
                f"expected {op!r} to close {opener.value!r} at column "
                f"{opener.col}, got {_describe(tok)}",
            )
        self.pos += 1


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _parse(text: str) -> _Node:
    if not isinstance(text, str):
        raise ExpressionError(str(text), 1, "a where expression must be a string")
    return _Parser(text).parse()


# --------------------------------------------------------------------------- values

# The kinds of value a ``where`` meets. Two values compare only when they are of one kind.
_NULL, _BOOL, _NUM, _STR, _LIST, _MAP, _OTHER = range(7)
_KIND_OF_TYPE: Final[dict[type, int]] = {
    type(None): _NULL, bool: _BOOL, int: _NUM, float: _NUM, str: _STR,
    list: _LIST, tuple: _LIST, dict: _MAP,
}  # fmt: skip
_MAX_COMPARE_DEPTH: Final = 64
"""Lists and objects nested deeper than this are not compared (the comparison is
unknown), so comparing hostile values never meets Python's recursion limit."""


def _kind(value: Any) -> int:
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):  # subclasses of the JSON types (not met in decoded events)
        return _BOOL
    if isinstance(value, int | float):
        return _NUM
    if isinstance(value, str):
        return _STR
    if isinstance(value, list | tuple):
        return _LIST
    if isinstance(value, Mapping):
        return _MAP
    return _OTHER  # bytes, msgpack extensions...: compare with nothing


def _nested_deeper(value: Any) -> bool:
    """Whether lists and objects nest more than ``_MAX_COMPARE_DEPTH`` deep in ``value``
    (``[]`` is 1 deep)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        kind = _kind(v)
        if kind == _LIST:
            items = v
        elif kind == _MAP:
            items = v.values()
        else:
            continue
        if depth > _MAX_COMPARE_DEPTH:
            return True
        stack.extend((item, depth + 1) for item in items)
    return False


def _same(a: Any, b: Any) -> bool:
    """Equality of two JSON values, kind by kind (``1`` is not ``true``; inside a list or
    an object ``null`` equals ``null``)."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return False
    if ka == _LIST:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if ka == _MAP:
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    if ka == _OTHER:
        return type(a) is type(b) and bool(a == b)
    return bool(a == b)


def _equal(a: Any, b: Any) -> bool | None:
    """SQL's ``a = b``: unknown (``None``) when either is null or their kinds differ."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka in (_NULL, _OTHER):
        return None
    if ka in (_LIST, _MAP):
        if _nested_deeper(a) or _nested_deeper(b):
            return None
        return _same(a, b)
    return bool(a == b)


def _compare(op: str, a: Any, b: Any) -> bool | None:
    """``a op b`` for any two values, in three-valued logic."""
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        eq = _equal(a, b)
        return None if eq is None else not eq
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in (_BOOL, _NUM, _STR):
        return None  # null, mixed kinds, lists and objects have no order
    return bool(_ORDER[op](a, b))


def _member(a: Any, b: Any) -> bool | None:
    """``a in b``: for a list, ``a = b[0] or a = b[1] or ...`` (false for ``[]``); for
    two strings, whether ``a`` occurs in ``b``; otherwise unknown."""
    kb = _kind(b)
    if kb == _LIST:
        found: bool | None = False
        for item in b:
            eq = _equal(a, item)
            if eq:
                return True
            if eq is None:
                found = None
        return found
    if kb == _STR and _kind(a) == _STR:
        return a in b
    return None


def _arith(op: str, a: Any, b: Any) -> Any:
    """``a op b``: numbers (and ``+`` on two strings); null for anything else, and for a
    division by zero or a result too large for a float."""
    ka, kb = _kind(a), _kind(b)
    if ka == _NUM and kb == _NUM:
        try:
            return _ARITH[op](a, b)
        except (ZeroDivisionError, OverflowError):
            return None
    if op == "+" and ka == _STR and kb == _STR:
        return a + b
    return None


def _negate(v: Any) -> Any:
    return -v if _kind(v) == _NUM else None


def _not(v: Any) -> bool | None:
    if v is True:
        return False
    if v is False:
        return True
    return None  # null, and any value that is not a boolean, is unknown


# --------------------------------------------------------------------------- compiling


def _field_getter(path: tuple[str, ...]) -> _Eval:
    if len(path) == 1:
        name = path[0]

        def get(r: Mapping[str, Any]) -> Any:
            return r.get(name)

        return get

    head, rest = path[0], path[1:]

    def get_path(r: Mapping[str, Any]) -> Any:
        v: Any = r.get(head)  # an event: a dict, or the decoder's struct with .get()
        for part in rest:
            if not isinstance(v, Mapping):
                return None
            v = v.get(part)
        return v

    return get_path


_ORDER: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_ARITH: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "%": operator.mod,
}  # fmt: skip
_FLIPPED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SCALAR_KINDS: Final = frozenset({_BOOL, _NUM, _STR})
_SCALAR_TYPES: Final = frozenset({bool, int, float, str})
_NUM_TYPES: Final = frozenset({int, float})
_TYPES_OF_KIND: Final[dict[int, frozenset[type]]] = {
    _BOOL: frozenset({bool}), _NUM: frozenset({int, float}), _STR: frozenset({str}),
}  # fmt: skip


def _reads_fields(node: _Node) -> bool:
    if isinstance(node, _Field):
        return True
    if isinstance(node, _List):
        return any(_reads_fields(i) for i in node.items)
    if isinstance(node, _Unary):
        return _reads_fields(node.operand)
    if isinstance(node, _Binary):
        return _reads_fields(node.left) or _reads_fields(node.right)
    return False


def _compile(node: _Node) -> _Eval:
    if not isinstance(node, _Const | _Field) and not _reads_fields(node):
        value = _compile_node(node)({})  # no field: the same for every event, so fold it
        return lambda r: value
    return _compile_node(node)


def _compile_node(node: _Node) -> _Eval:
    if isinstance(node, _Const):
        value = node.value
        return lambda r: value
    if isinstance(node, _Field):
        return _field_getter(node.path)
    if isinstance(node, _List):
        parts = tuple(_compile(item) for item in node.items)
        return lambda r: [p(r) for p in parts]
    if isinstance(node, _Unary):
        operand = _compile(node.operand)
        if node.op == "not":

            def not_(r: Mapping[str, Any]) -> bool | None:
                v = operand(r)
                if v is True:
                    return False
                if v is False:
                    return True
                return None

            return not_
        return lambda r: _negate(operand(r))
    return _compile_binary(node)


def _compile_binary(node: _Binary) -> _Eval:
    op = node.op
    left, right = _compile(node.left), _compile(node.right)
    if op == "and":

        def and_(r: Mapping[str, Any]) -> bool | None:
            a = left(r)
            if a is False:
                return False
            b = right(r)
            if a is True and (b is True or b is False):
                return b
            return False if b is False else None

        return and_
    if op == "or":

        def or_(r: Mapping[str, Any]) -> bool | None:
            a = left(r)
            if a is True:
                return True
            b = right(r)
            if a is False and (b is True or b is False):
                return b
            return True if b is True else None

        return or_
    if op in _ARITH:
        return _compile_arith(op, node, left, right)
    if op in ("==", "!=") and (_is_null(node.left) or _is_null(node.right)):
        # ``x == null`` is SQL's ``x IS NULL`` (never unknown); null compared otherwise is
        # unknown, as SQL's ``x = NULL`` is
        other = right if _is_null(node.left) else left
        if op == "==":
            return lambda r: other(r) is None
        return lambda r: other(r) is not None
    if op in ("in", "not in"):
        return _compile_membership(op == "in", node, left)
    return _compile_compare(op, node, left, right)


def _is_null(node: _Node) -> bool:
    return isinstance(node, _Const) and node.value is None


def _compile_arith(op: str, node: _Binary, left: _Eval, right: _Eval) -> _Eval:
    fn = _ARITH[op]
    if isinstance(node.right, _Const) and _kind(node.right.value) == _NUM:
        c = node.right.value

        def arith_const(r: Mapping[str, Any]) -> Any:
            a = left(r)
            if type(a) in _NUM_TYPES:
                try:
                    return fn(a, c)
                except (ZeroDivisionError, OverflowError):
                    return None
            return _arith(op, a, c)

        return arith_const

    def arith(r: Mapping[str, Any]) -> Any:
        a = left(r)
        b = right(r)
        if type(a) in _NUM_TYPES and type(b) in _NUM_TYPES:
            try:
                return fn(a, b)
            except (ZeroDivisionError, OverflowError):
                return None
        return _arith(op, a, b)

    return arith


def _compile_compare(op: str, node: _Binary, left: _Eval, right: _Eval) -> _Eval:
    lnode, rnode = node.left, node.right
    if isinstance(lnode, _Const) and not isinstance(rnode, _Const):
        lnode, rnode, left, right, op = rnode, lnode, right, left, _FLIPPED[op]
    if (
        isinstance(lnode, _Field)
        and len(lnode.path) == 1
        and isinstance(rnode, _Const)
        and _kind(rnode.value) in _SCALAR_KINDS
    ):
        return _compile_field_const(op, lnode.path[0], rnode.value)
    fn = _ORDER[op]
    if isinstance(rnode, _Const) and _kind(rnode.value) in _SCALAR_KINDS:
        c, same = rnode.value, _TYPES_OF_KIND[_kind(rnode.value)]

        def value_const(r: Mapping[str, Any]) -> bool | None:
            v = left(r)
            if type(v) in same:
                return fn(v, c)  # type: ignore[no-any-return]
            return _compare(op, v, c)

        return value_const

    def compare(r: Mapping[str, Any]) -> bool | None:
        a = left(r)
        b = right(r)
        t = type(a)
        if t is type(b) and t in _SCALAR_TYPES:
            return fn(a, b)  # type: ignore[no-any-return]
        return _compare(op, a, b)

    return compare


def _compile_field_const(op: str, name: str, c: Any) -> _Eval:
    """``field OP constant``, the common shape: one tight closure per operator. A value of
    the constant's own type is compared at once, anything else the long way."""
    if _kind(c) == _NUM:

        def num_eq(r: Mapping[str, Any]) -> bool | None:
            v = r.get(name)
            if type(v) in _NUM_TYPES:
                return v == c  # type: ignore[no-any-return]
            return _compare("==", v, c)

        def num_ne(r: Mapping[str, Any]) -> bool | None:
            v = r.get(name)
            if type(v) in _NUM_TYPES:
                return v != c  # type: ignore[no-any-return]
            return _compare("!=", v, c)

        fn = _ORDER[op]

        def num_cmp(r: Mapping[str, Any]) -> bool | None:
            v = r.get(name)
            if type(v) in _NUM_TYPES:
                return fn(v, c)  # type: ignore[no-any-return]
            return _compare(op, v, c)

        return num_eq if op == "==" else num_ne if op == "!=" else num_cmp
    ctype = type(c)

    def eq(r: Mapping[str, Any]) -> bool | None:
        v = r.get(name)
        if type(v) is ctype:
            return v == c  # type: ignore[no-any-return]
        return _compare("==", v, c)

    def ne(r: Mapping[str, Any]) -> bool | None:
        v = r.get(name)
        if type(v) is ctype:
            return v != c  # type: ignore[no-any-return]
        return _compare("!=", v, c)

    fn = _ORDER[op]

    def cmp(r: Mapping[str, Any]) -> bool | None:
        v = r.get(name)
        if type(v) is ctype:
            return fn(v, c)  # type: ignore[no-any-return]
        return _compare(op, v, c)

    return eq if op == "==" else ne if op == "!=" else cmp


def _compile_membership(positive: bool, node: _Binary, left: _Eval) -> _Eval:
    right = _compile(node.right)
    items = node.right.items if isinstance(node.right, _List) else None
    if items is None or not all(
        isinstance(i, _Const) and _kind(i.value) in (*_SCALAR_KINDS, _NULL) for i in items
    ):
        if positive:
            return lambda r: _member(left(r), right(r))
        return lambda r: _not(_member(left(r), right(r)))

    # ``x in [constants]``: one set per kind. A value found in its kind's set is in; one
    # not found is not in (false) when every constant is of its kind, else unknown (it
    # was compared with a null or a constant of another kind); ``[]`` holds nothing.
    values = [i.value for i in items if isinstance(i, _Const)]
    kinds = [_kind(v) for v in values]
    sets = {k: frozenset(v for v, kv in zip(values, kinds, strict=True) if kv == k)
            for k in set(kinds) if k != _NULL}
    miss: dict[int, bool | None] = {
        k: (False if all(kv == k and k in _SCALAR_KINDS for kv in kinds) else None)
        for k in range(_OTHER + 1)
    }
    if not positive:
        miss = {k: _not(m) for k, m in miss.items()}
    hit = positive
    kind_of = _KIND_OF_TYPE.get

    def decide(v: Any) -> bool | None:
        kind = kind_of(type(v))
        if kind is None:
            kind = _kind(v)
        found = sets.get(kind)
        if found is not None and v in found:
            return hit
        return miss[kind]

    if len(sets) != 1 or _NULL in kinds:
        return lambda r: decide(left(r))
    # every constant of one kind (``status in ['a', 'b']``): a value of that kind's types
    # is looked up at once
    ((kind, found),) = sets.items()
    types, absent = _TYPES_OF_KIND[kind], miss[kind]
    if isinstance(node.left, _Field) and len(node.left.path) == 1:
        name = node.left.path[0]

        def field_in(r: Mapping[str, Any]) -> bool | None:
            v = r.get(name)
            if type(v) in types:
                return hit if v in found else absent
            return decide(v)

        return field_in

    def value_in(r: Mapping[str, Any]) -> bool | None:
        v = left(r)
        if type(v) in types:
            return hit if v in found else absent
        return decide(v)

    return value_in


def compile_where(text: str) -> WherePredicate:
    """Compile a ``where`` expression once into a fast predicate over one event.

    The predicate takes the decoded event (a mapping) and returns ``True`` when the
    expression is true for it, ``False`` when it is false or unknown (SQL's three-valued
    logic: see the module docstring); it never raises. Its :meth:`WherePredicate.many`
    answers a whole batch of events at once, the same. Raises :class:`ExpressionError`
    with the column of the problem when ``text`` does not parse: fix the expression at
    that column.
    """
    return WherePredicate(_parse(text))


B: TypeAlias = npt.NDArray[np.bool_]
_Truth: TypeAlias = tuple[B, B]
"""An expression over a batch: where it is true, where it is false (elsewhere unknown)."""
_Columns: TypeAlias = dict[str, list[Any]]


class WherePredicate:
    """A compiled ``where`` (:func:`compile_where`): call it on one event, or :meth:`many`
    on a batch of events."""

    __slots__ = ("_many", "_one")

    def __init__(self, node: _Node) -> None:
        root = _compile(node)

        def one(record: Mapping[str, Any]) -> bool:
            try:
                return root(record) is True
            except (TypeError, ValueError, OverflowError, RecursionError):  # pragma: no cover
                return False  # a value no rule above foresaw: unknown, so the event is not kept

        self._one = one
        self._many = _compile_many(node)

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return self._one(record)

    def many(self, records: Sequence[Mapping[str, Any]],
             columns: _Columns | None = None) -> B:
        """``[self(r) for r in records]`` as a boolean array, evaluated a field at a time:
        the comparisons of a field with constants (and ``in`` a list of constants, ``==
        null``) over the batch's column, ``and``/``or``/``not`` over their truth, any other
        part of the expression event by event. ``columns``: field name -> the value of
        each record (``None`` where missing), read from the records when absent and added
        there (several ``where`` share them)."""
        if columns is None:
            columns = {}
        try:
            true, _false = self._many(records, columns)
        except (TypeError, ValueError, OverflowError, RecursionError):  # pragma: no cover
            return np.fromiter(map(self._one, records), dtype=np.bool_, count=len(records))
        return true


# --------------------------------------------------------------------------- batches

_ManyEval: TypeAlias = Callable[[Sequence[Mapping[str, Any]], _Columns], _Truth]


def _column(records: Sequence[Mapping[str, Any]], columns: _Columns, name: str) -> list[Any]:
    got = columns.get(name)
    if got is None:
        got = columns[name] = list(map(operator.methodcaller("get", name), records))
    return got


def _mask(values: Any, n: int) -> B:
    return np.fromiter(values, dtype=np.bool_, count=n)


def _truth_of(values: list[Any]) -> _Truth:
    """The truth of values an expression took, one per record."""
    n = len(values)
    return (_mask(map(operator.is_, values, repeat(True)), n),
            _mask(map(operator.is_, values, repeat(False)), n))


def _per_record(fn: _Eval) -> _ManyEval:
    def many(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
        return _truth_of(list(map(fn, records)))

    return many


def _leaf(name: str, fast_types: frozenset[type], fast: Callable[[list[Any]], B],
          one: _Eval) -> _ManyEval:
    """A test of one field whose answer is ``fast(values)`` (where it is true; false
    elsewhere, never unknown) for the values of ``fast_types``, unknown for the other
    JSON types (they are of another kind than the constants it compares with), and
    ``one`` (the closure) for any other type. A column whose values are all of
    ``fast_types`` (the usual one) takes a single pass."""
    known = frozenset(_KIND_OF_TYPE) - fast_types

    def many(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
        col = _column(records, columns, name)
        if set(map(type, col)) <= fast_types:
            true = fast(col)
            return true, ~true
        n = len(col)
        types = list(map(type, col))
        is_fast = _mask(map(fast_types.__contains__, types), n)
        true = np.zeros(n, dtype=np.bool_)
        false = np.zeros(n, dtype=np.bool_)
        if is_fast.any():
            where = np.flatnonzero(is_fast)
            got = fast(list(compress(col, is_fast)))
            true[where] = got
            false[where] = ~got
        odd = ~is_fast
        odd &= ~_mask(map(known.__contains__, types), n)
        for i in np.flatnonzero(odd).tolist():  # subclasses, bytes...: the closure
            v = one({name: col[i]})
            true[i] = v is True
            false[i] = v is False
        return true, false

    return many


def _compile_many(node: _Node) -> _ManyEval:
    """``node`` over a batch (see :meth:`WherePredicate.many`): the same truth, event by
    event, as :func:`_compile`'s closure."""
    if isinstance(node, _Unary) and node.op == "not":
        inner = _compile_many(node.operand)

        def not_(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
            true, false = inner(records, columns)
            return false, true

        return not_
    if isinstance(node, _Binary) and node.op in ("and", "or"):
        left, right = _compile_many(node.left), _compile_many(node.right)
        if node.op == "and":

            def and_(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
                lt, lf = left(records, columns)
                rt, rf = right(records, columns)
                return lt & rt, lf | rf

            return and_

        def or_(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
            lt, lf = left(records, columns)
            rt, rf = right(records, columns)
            return lt | rt, lf & rf

        return or_
    leaf = _many_leaf(node) if isinstance(node, _Binary) else None
    return leaf or _per_record(_compile(node))


def _many_leaf(node: _Binary) -> _ManyEval | None:
    """A comparison of one top-level field with constants over a batch; ``None`` for any
    other shape (evaluated event by event)."""
    op, lnode, rnode = node.op, node.left, node.right
    if op in ("==", "!=") and (_is_null(lnode) or _is_null(rnode)):
        other = rnode if _is_null(lnode) else lnode
        if not (isinstance(other, _Field) and len(other.path) == 1):
            return None
        name, is_null = other.path[0], op == "=="

        def null_test(records: Sequence[Mapping[str, Any]], columns: _Columns) -> _Truth:
            col = _column(records, columns, name)
            null = _mask(map(operator.is_, col, repeat(None)), len(col))
            return (null, ~null) if is_null else (~null, null)

        return null_test
    if op in ("in", "not in"):
        if not (isinstance(lnode, _Field) and len(lnode.path) == 1 and isinstance(rnode, _List)
                and rnode.items and all(isinstance(i, _Const) for i in rnode.items)):
            return None
        values = [i.value for i in rnode.items if isinstance(i, _Const)]
        kinds = {_kind(v) for v in values}
        if len(kinds) != 1 or not kinds <= _SCALAR_KINDS:
            return None
        (kind,) = kinds
        found = frozenset(values)
        hit = op == "in"  # every constant is of the value's kind: not found is false
        contains = found.__contains__

        def member(vals: list[Any]) -> B:
            found_at = _mask(map(contains, vals), len(vals))
            return found_at if hit else ~found_at

        return _leaf(lnode.path[0], _TYPES_OF_KIND[kind], member, _compile(node))
    if op not in _ORDER:
        return None
    if isinstance(lnode, _Const) and not isinstance(rnode, _Const):
        lnode, rnode, op = rnode, lnode, _FLIPPED[op]
    if not (isinstance(lnode, _Field) and len(lnode.path) == 1 and isinstance(rnode, _Const)
            and _kind(rnode.value) in _SCALAR_KINDS):
        return None
    c = rnode.value
    fn = _ORDER[op]
    fast_types = _NUM_TYPES if _kind(c) == _NUM else frozenset({type(c)})

    def compare(vals: list[Any]) -> B:  # of values of c's kind: True or False
        return _mask(map(fn, vals, repeat(c)), len(vals))

    return _leaf(lnode.path[0], fast_types, compare, _compile(node))


def fields_of(text: str) -> frozenset[str]:
    """The top-level event field names ``text`` reads (``a`` for ``a.b``).

    Raises :class:`ExpressionError` when ``text`` does not parse.
    """
    found: set[str] = set()
    stack: list[_Node] = [_parse(text)]
    while stack:
        node = stack.pop()
        if isinstance(node, _Field):
            found.add(node.path[0])
        elif isinstance(node, _List):
            stack.extend(node.items)
        elif isinstance(node, _Unary):
            stack.append(node.operand)
        elif isinstance(node, _Binary):
            stack.extend((node.left, node.right))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class FieldUse:
    """How an expression uses one field (a path, ``("payment", "method")``): the kinds of
    value it compares the field with or computes with it (``number``, ``string``,
    ``boolean``), the literals it compares it with, and whether it tests it for ``null``.
    What an event generator needs to make events the expression keeps and events it
    drops."""

    path: tuple[str, ...]
    kinds: frozenset[str]
    literals: tuple[Any, ...]
    null_test: bool = False


_ARITHMETIC: Final = frozenset({"+", "-", "*", "/", "%"})


def _const_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def field_uses(text: str) -> dict[tuple[str, ...], FieldUse]:
    """Each field path ``text`` reads, with how it uses it (see :class:`FieldUse`).

    Raises :class:`ExpressionError` when ``text`` does not parse.
    """
    kinds: dict[tuple[str, ...], set[str]] = {}
    literals: dict[tuple[str, ...], list[Any]] = {}
    null_tests: set[tuple[str, ...]] = set()

    def note(node: _Node, kind: str | None, *values: Any) -> None:
        if not isinstance(node, _Field):
            return
        kinds.setdefault(node.path, set())
        literals.setdefault(node.path, [])
        if kind is not None:
            kinds[node.path].add(kind)
        literals[node.path].extend(v for v in values if v not in literals[node.path])

    def compared(field: _Node, other: _Node) -> None:
        if isinstance(other, _Const):
            note(field, _const_kind(other.value),
                 *(() if other.value is None else (other.value,)))
            if other.value is None and isinstance(field, _Field):
                null_tests.add(field.path)

    stack: list[tuple[_Node, bool]] = [(_parse(text), True)]  # (node, used as a truth value)
    while stack:
        node, truth = stack.pop()
        if isinstance(node, _Field):
            note(node, "boolean" if truth else None)
        elif isinstance(node, _List):
            stack.extend((item, False) for item in node.items)
        elif isinstance(node, _Unary):
            if node.op == "-":
                note(node.operand, "number")
            stack.append((node.operand, node.op == "not"))
        elif isinstance(node, _Binary):
            op, left, right = node.op, node.left, node.right
            if op in ("and", "or"):
                stack.extend(((left, True), (right, True)))
                continue
            if op in ("in", "not in"):
                if isinstance(right, _List):
                    items = [i.value for i in right.items if isinstance(i, _Const)]
                    for kind in {_const_kind(v) for v in items} or {None}:
                        note(left, kind, *(v for v in items if v is not None))
                elif isinstance(right, _Const) and isinstance(right.value, str):
                    note(left, "string")
                elif isinstance(left, _Const) and isinstance(left.value, str):
                    note(right, "string")  # a substring test
            elif op in _COMPARISONS:
                compared(left, right)
                compared(right, left)
            elif op in _ARITHMETIC:
                joins = op == "+" and any(isinstance(n, _Const) and isinstance(n.value, str)
                                          for n in (left, right))
                note(left, "string" if joins else "number")
                note(right, "string" if joins else "number")
            stack.extend(((left, False), (right, False)))
    return {path: FieldUse(path, frozenset(kinds[path]), tuple(literals[path]),
                           path in null_tests)
            for path in kinds}


# --------------------------------------------------------------------------- canonical text


def canonical_where(text: str) -> str:
    """The canonical text of a ``where``: same meaning, one spelling.

    Spacing, quotes and redundant parentheses are normalized, so that
    reformatting a ``where`` does not change the feature's state hash.
    Raises :class:`ExpressionError` when ``text`` does not parse.
    """
    return _render(_parse(text), 0)


def _render_const(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
        return f"'{escaped}'"
    text = repr(value)
    if value < 0:
        return f"({text})"
    return text


def _render(node: _Node, parent_bp: int) -> str:
    if isinstance(node, _Const):
        return _render_const(node.value)
    if isinstance(node, _Field):
        return ".".join(node.path)
    if isinstance(node, _List):
        return "[" + ", ".join(_render(i, 0) for i in node.items) + "]"
    if isinstance(node, _Unary):
        if node.op == "not":
            body, bp = f"not {_render(node.operand, _NOT - 1)}", _NOT
        else:
            body, bp = f"-{_render(node.operand, _NEG)}", _NEG
    else:
        bp = _INFIX[node.op]
        left = _render(node.left, bp if bp == _CMP else bp - 1)
        right = _render(node.right, bp)
        body = f"{left} {node.op} {right}"
    return f"({body})" if bp <= parent_bp else body
