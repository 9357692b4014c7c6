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

Semantics, chosen so that a ``where`` never raises on bad data:

- a missing field (or a path through a non-mapping) is ``null``;
- arithmetic (``+ - * / %``, unary ``-``) works on numbers (``+`` also joins two
  strings); with a ``null`` operand it gives ``null``;
- a comparison with a ``null`` operand is false, except ``x == null`` and
  ``x != null``, which test for presence (SQL-like: ``status != 'x'`` is false
  for an event without ``status``);
- ``and``/``or``/``not`` use truthiness (``null``, ``0``, ``''`` are false);
- a type error (``'a' < 1``, ``'a' * 2``), a division by zero or an overflow anywhere,
  or values nested too deep to compare, make the whole predicate false for that event.

Comparisons do not chain: write ``0 < x and x < 10``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from streamfeat.errors import StreamfeatError

__all__ = [
    "ExpressionError",
    "Predicate",
    "canonical_where",
    "compile_where",
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


# --------------------------------------------------------------------------- compiling


class _NoMatch(Exception):
    """Internal: a type error in arithmetic; the predicate is false."""


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
_NUMBER_TYPES: Final = (int, float)


def _arith(op: str, a: Any, b: Any) -> Any:
    """Reference arithmetic on two present values (used for folding and at run time)."""
    if isinstance(a, _NUMBER_TYPES) and isinstance(b, _NUMBER_TYPES):
        return _ARITH[op](a, b)
    if op == "+" and type(a) is str and type(b) is str:
        return a + b
    raise _NoMatch


def _compile(node: _Node) -> _Eval:
    if isinstance(node, _Const):
        value = node.value
        return lambda r: value
    if isinstance(node, _Field):
        return _field_getter(node.path)
    if isinstance(node, _List):
        if all(isinstance(item, _Const) for item in node.items):
            consts = [item.value for item in node.items if isinstance(item, _Const)]
            return lambda r: consts
        parts = tuple(_compile(item) for item in node.items)
        return lambda r: [p(r) for p in parts]
    if isinstance(node, _Unary):
        operand = _compile(node.operand)
        if node.op == "not":
            return lambda r: not operand(r)

        def neg(r: Mapping[str, Any]) -> Any:
            v = operand(r)
            if v is None:
                return None
            if isinstance(v, _NUMBER_TYPES):
                return -v
            raise _NoMatch

        return neg
    return _compile_binary(node)


def _compile_binary(node: _Binary) -> _Eval:
    op = node.op
    left, right = _compile(node.left), _compile(node.right)
    if op == "and":
        return lambda r: left(r) and right(r)
    if op == "or":
        return lambda r: left(r) or right(r)
    if op in _ARITH:
        return _compile_arith(op, left, right)
    if op in ("==", "!=") and (_is_null(node.left) or _is_null(node.right)):
        other = right if _is_null(node.left) else left
        if op == "==":
            return lambda r: other(r) is None
        return lambda r: other(r) is not None
    if op in ("in", "not in"):
        return _compile_membership(op == "in", node, left, right)
    return _compile_compare(op, node, left, right)


def _is_null(node: _Node) -> bool:
    return isinstance(node, _Const) and node.value is None


def _compile_arith(op: str, left: _Eval, right: _Eval) -> _Eval:
    fn = _ARITH[op]

    def arith(r: Mapping[str, Any]) -> Any:
        a = left(r)
        b = right(r)
        if a is None or b is None:
            return None
        if type(a) in _NUMBER_TYPES and type(b) in _NUMBER_TYPES:
            return fn(a, b)
        return _arith(op, a, b)

    return arith


def _compile_compare(op: str, node: _Binary, left: _Eval, right: _Eval) -> _Eval:
    fn = _ORDER[op]
    # The common shapes, ``field OP constant``, get one tight closure each.
    if (
        isinstance(node.left, _Field)
        and len(node.left.path) == 1
        and isinstance(node.right, _Const)
        and node.right.value is not None
    ):
        name, c = node.left.path[0], node.right.value
        if op == "==":
            return lambda r: r.get(name) == c
        if op == "!=":

            def field_ne(r: Mapping[str, Any]) -> bool:
                v = r.get(name)
                return v is not None and v != c

            return field_ne

        def field_cmp(r: Mapping[str, Any]) -> Any:
            v = r.get(name)
            return v is not None and fn(v, c)

        return field_cmp

    def compare(r: Mapping[str, Any]) -> Any:
        a = left(r)
        b = right(r)
        return a is not None and b is not None and fn(a, b)

    return compare


def _compile_membership(positive: bool, node: _Binary, left: _Eval, right: _Eval) -> _Eval:
    if isinstance(node.right, _List) and all(isinstance(i, _Const) for i in node.right.items):
        values = tuple(i.value for i in node.right.items if isinstance(i, _Const))
        try:
            lookup: frozenset[Any] | tuple[Any, ...] = frozenset(values)
        except TypeError:  # pragma: no cover - literals are always hashable
            lookup = values

        def in_consts(r: Mapping[str, Any]) -> bool:
            v = left(r)
            if v is None:
                return False
            try:
                found = v in lookup
            except TypeError:  # an unhashable value (list, dict) is in no literal list
                found = v in values
            return found if positive else not found

        return in_consts

    def member(r: Mapping[str, Any]) -> bool:
        a = left(r)
        b = right(r)
        if a is None or b is None:
            return False
        if isinstance(b, str | list | tuple | Mapping):
            found = a in b
            return found if positive else not found
        raise _NoMatch

    return member


def compile_where(text: str) -> Predicate:
    """Compile a ``where`` expression once into a fast predicate over one event.

    The predicate takes the decoded event (a mapping) and returns ``True`` when
    the event passes; see the module docstring for how missing fields and type
    errors are treated (they never raise). Raises :class:`ExpressionError` with
    the column of the problem when ``text`` does not parse: fix the expression
    at that column.
    """
    root = _compile(_parse(text))

    def predicate(record: Mapping[str, Any]) -> bool:
        try:
            return bool(root(record))
        except (_NoMatch, TypeError, ValueError, ZeroDivisionError, OverflowError,
                RecursionError):  # comparing lists nested hundreds deep
            return False

    return predicate


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
