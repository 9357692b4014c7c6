"""The ``where`` language: parsing, semantics, errors, and a reference-model property test."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfeat.errors import StreamfeatError
from streamfeat.topology import ExpressionError, canonical_where, compile_where, fields_of

# ------------------------------------------------------------------ examples


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("status == 'completed'", {"status": "completed"}, True),
        ("status == 'completed'", {"status": "cancelled"}, False),
        ('status == "completed"', {"status": "completed"}, True),
        ("status != 'cancelled'", {"status": "completed"}, True),
        ("status != 'cancelled'", {}, False),  # missing -> null -> comparison false
        ("amount > 10", {"amount": 10.5}, True),
        ("amount > 10", {"amount": None}, False),
        ("amount > 10", {}, False),
        ("amount <= 10", {"amount": 10}, True),
        ("amount >= 10.0", {"amount": 9.99}, False),
        ("amount < 1e3", {"amount": 999}, True),
        ("amount * 2 + 1 == 21", {"amount": 10}, True),
        ("amount / 4 == 2.5", {"amount": 10}, True),
        ("amount % 3 == 1", {"amount": 10}, True),
        ("-amount < 0", {"amount": 1}, True),
        ("amount - -1 == 2", {"amount": 1}, True),
        ("status in ['completed', 'pending']", {"status": "pending"}, True),
        ("status in ['completed', 'pending']", {"status": "cancelled"}, False),
        ("status not in ['completed', 'pending']", {"status": "cancelled"}, True),
        ("status not in ['completed', 'pending']", {}, False),
        ("x in [1, 2.5, -3]", {"x": -3}, True),
        ("'vip' in tags", {"tags": ["new", "vip"]}, True),
        ("'vip' in tags", {"tags": "vip-gold"}, True),
        ("'vip' in tags", {}, False),
        ("'vip' in tags", {"tags": 3}, False),
        ("x == null", {}, True),
        ("x == null", {"x": 0}, False),
        ("null == x", {"x": None}, True),
        ("x != null", {"x": 0}, True),
        ("x != null", {}, False),
        ("flag == true", {"flag": True}, True),
        ("flag", {"flag": True}, True),
        ("not flag", {"flag": False}, True),
        ("not flag", {}, True),
        ("a and b", {"a": True, "b": True}, True),
        ("a and b", {"a": True}, False),
        ("a or b", {"b": True}, True),
        ("not (a or b)", {}, True),
        ("payment.method == 'card'", {"payment": {"method": "card"}}, True),
        ("payment.method == 'card'", {"payment": "card"}, False),
        ("payment.method == null", {}, True),
        ("a.b.c > 1", {"a": {"b": {"c": 2}}}, True),
        ("tags == ['a', 'b']", {"tags": ["a", "b"]}, True),
        ("name + '!' == 'hi!'", {"name": "hi"}, True),
        ("1 + 2 * 3 == 7", {}, True),
        ("(1 + 2) * 3 == 9", {}, True),
        ("10 - 2 - 3 == 5", {}, True),
        ("8 / 2 / 2 == 2", {}, True),
        ("not true or true", {}, True),
        ("true or false and false", {}, True),
        ("not 1 == 2", {}, True),
        ("-2 * 3 == -6", {}, True),
        ("'it\\'s' == \"it's\"", {}, True),
        ("'a\\nb' == x", {"x": "a\nb"}, True),
        (".5 == 0.5", {}, True),
        ("1E2 == 100", {}, True),
        ("a < null", {"a": 0}, False),
        ("1 + (a < null) == 1", {"a": 0}, True),  # found by the reference-model test
    ],
)
def test_examples(text: str, record: dict[str, Any], expected: bool) -> None:
    assert compile_where(text)(record) is expected


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("x < 1", {"x": "a"}),
        ("not (x < 1)", {"x": "a"}),  # a type error anywhere makes the predicate false
        ("x * 2 == 'aa'", {"x": "a"}),
        ("x - 1 > 0", {"x": "5"}),
        ("-x < 0", {"x": "5"}),
        ("x / 0 > 1", {"x": 5}),
        ("not (x % 0 > 1)", {"x": 5}),
        ("1 in x", {"x": "abc"}),
        ("[1] < 2", {}),
        ("x > 1", {"x": {"nested": 1}}),
        ("x + 1 > 0", {"x": [1]}),
        ("x * 1.0 > 0", {"x": 10**400}),
    ],
)
def test_type_errors_make_the_predicate_false(text: str, record: dict[str, Any]) -> None:
    assert compile_where(text)(record) is False


def test_arithmetic_with_null_is_null() -> None:
    assert compile_where("x + 1 == null")({}) is True
    assert compile_where("-x == null")({}) is True
    assert compile_where("x + 1 > 0")({}) is False


def test_fields_of() -> None:
    assert fields_of("status == 'x' and amount * rate > 1") == {"status", "amount", "rate"}
    assert fields_of("payment.method in ['card'] or not flag") == {"payment", "flag"}
    assert fields_of("1 < 2") == frozenset()
    assert fields_of("x in [y, 1]") == {"x", "y"}
    assert fields_of("-x == null") == {"x"}


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("status=='completed'", "status == 'completed'"),
        ('(status == "completed")', "status == 'completed'"),
        ("a and (b or c)", "a and (b or c)"),
        ("(a and b) or c", "a and b or c"),
        ("1 - (2 - 3)", "1 - (2 - 3)"),
        ("(1 - 2) - 3", "1 - 2 - 3"),
        ("not (a == 1)", "not a == 1"),
        ("(not a) == b", "(not a) == b"),
        ("x in [1,2,  3]", "x in [1, 2, 3]"),
        ("x not in []", "x not in []"),
        ("- - x", "-(-x)"),
        ("-3 * x", "(-3) * x"),
        ("x == 'it\\'s'", "x == 'it\\'s'"),
        ("x==null and y!=true", "x == null and y != true"),
        ("a.b >= 1.5", "a.b >= 1.5"),
    ],
)
def test_canonical_where(text: str, canonical: str) -> None:
    assert canonical_where(text) == canonical
    assert canonical_where(canonical) == canonical


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "empty expression"),
        ("   ", 4, "empty expression"),
        ("status = 'x'", 8, "use '=='"),
        ("a && b", 3, "use 'and'"),
        ("a || b", 3, "use 'or'"),
        ("!a", 1, "use 'not'"),
        ("a > ", 5, "expected a value"),
        ("a >", 4, "end of expression"),
        ("(a > 1", 7, "expected ')' to close '(' at column 1"),
        ("[1, 2", 6, "expected ']' to close '['"),
        ("a > 1)", 6, "unexpected ')'"),
        ("a b", 3, "unexpected field 'b'"),
        ("'abc", 1, "unterminated string"),
        ("'a\\qb'", 3, "unknown escape"),
        ("1 < x < 3", 7, "comparisons do not chain"),
        ("a == b == c", 8, "comparisons do not chain"),
        ("a.", 3, "expected a field name after '.'"),
        ("a.1", 3, "expected a field name after '.'"),
        ("12abc", 3, "after a number"),
        ("x @ 1", 3, "unexpected character '@'"),
        ("__import__('os')", 11, "unexpected '('"),
        ("x.__class__ == 1 and ", 22, "expected a value"),
        ("1e999 > x", 1, "number too large"),
        ("not", 4, "expected a value"),
        ("a in", 5, "expected a value"),
        ("a not b", 3, "unexpected 'not'"),
        ("(" * 100 + "1" + ")" * 100, 65, "nested too deeply"),
    ],
)
def test_parse_errors_carry_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_where(text)
    assert isinstance(info.value, StreamfeatError)
    assert info.value.column == column, str(info.value)
    assert fragment in info.value.reason
    assert str(info.value).startswith(f"column {column}: ")
    assert info.value.text == text


def test_attribute_access_is_only_mapping_lookup() -> None:
    # dotted names read nested mappings, never Python attributes
    predicate = compile_where("x.__class__ == null")
    assert predicate({"x": 1}) is True
    assert predicate({"x": {"__class__": 1}}) is False


# ------------------------------------------------------------------ reference model

FIELDS = ("a", "b", "c", "s")
ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class RefError(Exception):
    pass


def is_null_literal(node: tuple[Any, ...]) -> bool:
    return node[0] == "const" and node[1] is None


def ref_eval(node: tuple[Any, ...], record: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "field":
        return record.get(node[1])
    if kind == "list":
        return [ref_eval(item, record) for item in node[1]]
    if kind == "neg":
        v = ref_eval(node[1], record)
        if v is None:
            return None
        if isinstance(v, int | float):
            return -v
        raise RefError
    if kind == "not":
        return not ref_eval(node[1], record)
    if kind == "and":
        return ref_eval(node[1], record) and ref_eval(node[2], record)
    if kind == "or":
        return ref_eval(node[1], record) or ref_eval(node[2], record)
    op, left, right = node[1], node[2], node[3]
    a, b = ref_eval(left, record), ref_eval(right, record)
    if kind == "arith":
        if a is None or b is None:
            return None
        if isinstance(a, int | float) and isinstance(b, int | float):
            try:
                return ARITH[op](a, b)
            except (ZeroDivisionError, OverflowError) as exc:
                raise RefError from exc
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        raise RefError
    if kind == "cmp":
        if op in ("==", "!=") and (is_null_literal(left) or is_null_literal(right)):
            other = b if is_null_literal(left) else a
            return (other is None) == (op == "==")
        if a is None or b is None:
            return False
        try:
            return COMPARE[op](a, b)
        except TypeError as exc:
            raise RefError from exc
    assert kind == "in"
    if a is None or b is None:
        return False
    if not isinstance(b, str | list):
        raise RefError
    try:
        found = a in b
    except TypeError as exc:
        raise RefError from exc
    return found if op == "in" else not found


def reference(node: tuple[Any, ...], record: Mapping[str, Any]) -> bool:
    try:
        return bool(ref_eval(node, record))
    except RefError:
        return False


def render_const(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"({value!r})"


def render(node: tuple[Any, ...]) -> str:
    """Fully parenthesized text of a tree."""
    kind = node[0]
    if kind == "const":
        return render_const(node[1])
    if kind == "field":
        return str(node[1])
    if kind == "list":
        return "[" + ", ".join(render(i) for i in node[1]) + "]"
    if kind == "neg":
        return f"(-{render(node[1])})"
    if kind == "not":
        return f"(not {render(node[1])})"
    if kind in ("and", "or"):
        return f"({render(node[1])} {kind} {render(node[2])})"
    return f"({render(node[2])} {node[1]} {render(node[3])})"


consts = st.one_of(
    st.integers(-20, 20),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
    st.text(alphabet="ab '\"\\", max_size=3),
    st.sampled_from([True, False, None]),
).map(lambda v: ("const", v))
leaves = st.one_of(consts, st.sampled_from(FIELDS).map(lambda f: ("field", f)))


def extend(children: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        st.tuples(st.just("arith"), st.sampled_from(sorted(ARITH)), children, children),
        st.tuples(st.just("cmp"), st.sampled_from(sorted(COMPARE)), children, children),
        st.tuples(
            st.just("in"),
            st.sampled_from(["in", "not in"]),
            children,
            st.one_of(st.lists(children, max_size=3).map(lambda xs: ("list", tuple(xs))), children),
        ),
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("not"), children),
        st.tuples(st.sampled_from(["and", "or"]), children, children),
    )


trees = st.recursive(leaves, extend, max_leaves=12)
values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-10, 10, allow_nan=False),
    st.text("ab", max_size=2),
    st.booleans(),
    st.lists(st.integers(0, 2), max_size=2),
)
records = st.dictionaries(st.sampled_from(FIELDS), values)


@settings(max_examples=300, deadline=None)
@given(tree=trees, record=records)
def test_matches_the_reference_model(tree: tuple[Any, ...], record: dict[str, Any]) -> None:
    text = render(tree)
    expected = reference(tree, record)
    assert compile_where(text)(record) is expected, text
    # the canonical text (minimal parentheses) means the same
    canonical = canonical_where(text)
    assert compile_where(canonical)(record) is expected, canonical
    assert canonical_where(canonical) == canonical


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab1 ()'\"=<>!+-*/%.,[]andotri", max_size=20))
def test_arbitrary_text_parses_or_raises_expression_error(text: str) -> None:
    try:
        predicate = compile_where(text)
    except ExpressionError as exc:
        assert 1 <= exc.column <= len(text) + 1
        return
    assert predicate({"a": 1, "b": "x"}) in (True, False)
    assert predicate({}) in (True, False)
    assert compile_where(canonical_where(text))({"a": 1, "b": "x"}) is predicate({"a": 1, "b": "x"})


def test_compiled_predicate_is_reusable_and_fast_enough() -> None:
    predicate = compile_where("status == 'completed' and amount > 10")
    record = {"status": "completed", "amount": 11.0}
    assert all(predicate(record) for _ in range(10_000))
