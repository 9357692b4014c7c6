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

from reference import where_truth

# ------------------------------------------------------------------ examples


def truth(text: str, record: Mapping[str, Any]) -> bool | None:
    """The three-valued truth of ``text`` for ``record``, through the public predicate: it
    keeps an event only when the expression is true, so a false expression is one whose
    negation keeps it, and an unknown one is kept by neither."""
    if compile_where(text)(record):
        return True
    if compile_where(f"not ({text})")(record):
        return False
    return None


NAN = float("nan")


def nested(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        # comparisons; a missing or null field makes them unknown (contract section 2)
        ("status == 'completed'", {"status": "completed"}, True),
        ("status == 'completed'", {"status": "cancelled"}, False),
        ('status == "completed"', {"status": "completed"}, True),
        ("status != 'cancelled'", {"status": "completed"}, True),
        ("status != 'cancelled'", {"status": "cancelled"}, False),
        ("status != 'cancelled'", {}, None),
        ("status != 'cancelled'", {"status": None}, None),
        ("'cancelled' != status", {}, None),
        ("amount > 10", {"amount": 10.5}, True),
        ("amount > 10", {"amount": None}, None),
        ("amount > 10", {}, None),
        ("10 < amount", {"amount": 11}, True),
        ("10 >= amount", {"amount": 11}, False),
        ("amount <= 10", {"amount": 10}, True),
        ("amount >= 10.0", {"amount": 9.99}, False),
        ("amount < 1e3", {"amount": 999}, True),
        ("a < b", {"a": 1, "b": 2.5}, True),
        ("a == b", {"a": 2, "b": 2.0}, True),
        ("a == b", {"a": 1}, None),
        # mismatched kinds are unknown; a boolean is not a number
        ("amount > 10", {"amount": "11"}, None),
        ("not (amount > 10)", {"amount": "11"}, None),
        ("x < 1", {"x": "a"}, None),
        ("flag == 1", {"flag": True}, None),
        ("flag != 1", {"flag": True}, None),
        ("flag == true", {"flag": 1}, None),
        ("flag == true", {"flag": True}, True),
        ("flag != true", {"flag": False}, True),
        ("flag < true", {"flag": False}, True),
        ("1 == true", {}, None),
        ("0 == false", {}, None),
        ("'1' == 1", {}, None),
        ("x > 1", {"x": {"nested": 1}}, None),
        ("[1] < 2", {}, None),
        ("tags < ['b']", {"tags": ["a"]}, None),
        ("x == x", {"x": b"raw"}, None),
        ("x != null", {"x": b"raw"}, True),
        # numbers: IEEE for NaN
        ("x == x", {"x": NAN}, False),
        ("x != 1", {"x": NAN}, True),
        ("x < 1", {"x": NAN}, False),
        # lists and objects: equality item by item, kind by kind
        ("tags == ['a', 'b']", {"tags": ["a", "b"]}, True),
        ("tags == ['a', 'b']", {"tags": ["a"]}, False),
        ("tags == ['a', 1]", {"tags": ["a", True]}, False),
        ("tags == [1]", {"tags": [1.0]}, True),
        ("tags == [null]", {"tags": [None]}, True),
        ("tags != [a]", {"tags": [None]}, False),
        ("m == n", {"m": {"a": 1}, "n": {"a": 1}}, True),
        ("m == n", {"m": {"a": 1}, "n": {"a": True}}, False),
        ("m == n", {"m": {"a": 1}, "n": {"b": 1}}, False),
        ("tags == 'a'", {"tags": ["a"]}, None),
        ("x == y", {"x": nested(100), "y": nested(100)}, None),
        ("x == y", {"x": nested(10), "y": nested(10)}, True),
        # x == null is IS NULL: never unknown
        ("x == null", {}, True),
        ("x == null", {"x": None}, True),
        ("x == null", {"x": 0}, False),
        ("null == x", {"x": None}, True),
        ("x != null", {"x": 0}, True),
        ("x != null", {}, False),
        ("null == null", {}, True),
        ("x == y", {"x": None}, None),
        ("x == -null", {}, None),
        ("payment.method == null", {}, True),
        ("x.__class__ == null", {"x": 1}, True),
        # Kleene's and, or, not
        ("not (x < 1)", {}, None),
        ("x < 1 and false", {}, False),
        ("false and x < 1", {}, False),
        ("x < 1 and true", {}, None),
        ("x < 1 or true", {}, True),
        ("true or x < 1", {}, True),
        ("x < 1 or false", {}, None),
        ("x < 1 or y < 1", {"y": 0}, True),
        ("x < 1 and y < 1", {"y": 2}, False),
        ("not true or true", {}, True),
        ("true or false and false", {}, True),
        ("not 1 == 2", {}, True),
        # only booleans are truth values
        ("flag", {"flag": True}, True),
        ("flag", {"flag": False}, False),
        ("flag", {}, None),
        ("flag", {"flag": 1}, None),
        ("flag", {"flag": "yes"}, None),
        ("not flag", {"flag": False}, True),
        ("not flag", {}, None),
        ("not flag", {"flag": 0}, None),
        ("not (a or b)", {}, None),
        ("a and b", {"a": True, "b": True}, True),
        ("a and b", {"a": True}, None),
        ("a and b", {"a": 1, "b": False}, False),
        ("a or b", {"b": True}, True),
        ("1", {}, None),
        ("x + 1", {"x": 1}, None),
        # in: x in [a, b] is x == a or x == b
        ("status in ['completed', 'pending']", {"status": "pending"}, True),
        ("status in ['completed', 'pending']", {"status": "cancelled"}, False),
        ("status in ['completed', 'pending']", {}, None),
        ("status in ['completed', 'pending']", {"status": 1}, None),
        ("status not in ['completed', 'pending']", {"status": "cancelled"}, True),
        ("status not in ['completed', 'pending']", {"status": "pending"}, False),
        ("status not in ['completed', 'pending']", {}, None),
        ("not (status in ['x'])", {}, None),
        ("x in [1, 2.5, -3]", {"x": -3}, True),
        ("x in [1, 2.5, -3]", {"x": -3.0}, True),
        ("x in [1, 2]", {"x": True}, None),
        ("x in [true]", {"x": 1}, None),
        ("x in [true, false]", {"x": False}, True),
        ("2 in ['a', 2]", {}, True),
        ("x in ['a', 2]", {"x": 3}, None),
        ("x not in ['a', 2]", {"x": 3}, None),
        ("x in [1, null]", {"x": 1}, True),
        ("x in [1, null]", {"x": 2}, None),
        ("x not in [1, null]", {"x": 2}, None),
        ("x in [null]", {}, None),
        ("x in []", {}, False),
        ("x not in []", {}, True),
        ("x in []", {"x": 1}, False),
        ("x in [y, 1]", {"x": 1}, True),
        ("x in [y, 1]", {"x": 2}, None),
        ("x in [y, 1]", {"x": 2, "y": 3}, False),
        ("x in [[1], [2]]", {"x": [2]}, True),
        ("x in [[1], [2]]", {"x": [3]}, False),
        ("x in [[1], 2]", {"x": [3]}, None),
        ("x in ['a']", {"x": ["a"]}, None),
        ("x in ['a', 'b']", {"x": b"a"}, None),
        ("'vip' in tags", {"tags": ["new", "vip"]}, True),
        ("'vip' in tags", {"tags": ["new"]}, False),
        ("'vip' in tags", {"tags": ["new", None]}, None),
        ("'vip' in tags", {"tags": "vip-gold"}, True),
        ("'vip' in tags", {"tags": "gold"}, False),
        ("'vip' in tags", {}, None),
        ("'vip' in tags", {"tags": 3}, None),
        ("'vip' in tags", {"tags": {"vip": 1}}, None),
        ("1 in x", {"x": "abc1"}, None),
        ("x in 'abc'", {}, None),
        ("x in y", {"x": 1}, None),
        # arithmetic: null (unknown) propagates; a type error or a division by zero is null
        ("amount * 2 + 1 == 21", {"amount": 10}, True),
        ("amount / 4 == 2.5", {"amount": 10}, True),
        ("amount % 3 == 1", {"amount": 10}, True),
        ("-7 % 3 == 2", {}, True),
        ("7 / 2 == 3.5", {}, True),
        ("-amount < 0", {"amount": 1}, True),
        ("amount - -1 == 2", {"amount": 1}, True),
        ("name + '!' == 'hi!'", {"name": "hi"}, True),
        ("x + 1 == null", {}, True),
        ("-x == null", {}, True),
        ("x + 1 > 0", {}, None),
        ("not (x + 1 > 0)", {}, None),
        ("x * 2 == 'aa'", {"x": "a"}, None),
        ("x * 2 == null", {"x": "a"}, True),
        ("x - 1 > 0", {"x": "5"}, None),
        ("-x < 0", {"x": "5"}, None),
        ("-x == null", {"x": True}, True),
        ("x + 1 == 2", {"x": True}, None),
        ("x + 1 == null", {"x": [1]}, True),
        ("x / 0 > 1", {"x": 5}, None),
        ("x / 0 == null", {"x": 5}, True),
        ("not (x % 0 > 1)", {"x": 5}, None),
        ("x % 0 > 1 or true", {"x": 5}, True),
        ("x * 1.0 == null", {"x": 10**400}, True),
        ("'a' + 1 == null", {}, True),
        ("1 + (a < null) == 1", {"a": 0}, None),
        ("1 + 2 * 3 == 7", {}, True),
        ("(1 + 2) * 3 == 9", {}, True),
        ("10 - 2 - 3 == 5", {}, True),
        ("8 / 2 / 2 == 2", {}, True),
        ("-2 * 3 == -6", {}, True),
        # literals and paths
        ("'it\\'s' == \"it's\"", {}, True),
        ("'a\\nb' == x", {"x": "a\nb"}, True),
        (".5 == 0.5", {}, True),
        ("1E2 == 100", {}, True),
        ("payment.method == 'card'", {"payment": {"method": "card"}}, True),
        ("payment.method == 'card'", {"payment": "card"}, None),
        ("a.b.c > 1", {"a": {"b": {"c": 2}}}, True),
        ("a.b.c > 1", {"a": {"b": [2]}}, None),
    ],
)
def test_three_valued_examples(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert truth(text, record) is expected
    assert compile_where(text)(record) is (expected is True)
    assert where_truth(text, record) is expected  # the test reference (tests/reference.py)


def test_the_issue_case() -> None:
    """Issue #13: ``status != 'x'`` and ``not (status in ['x'])`` agree on an event without
    ``status``: both unknown, so neither keeps it."""
    for text in ("status != 'x'", "not (status in ['x'])", "status not in ['x']"):
        assert compile_where(text)({}) is False
        assert compile_where(text)({"status": "y"}) is True


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
# A straightforward interpreter of the contract's three-valued logic over syntax trees
# (tuples), written from the module docstring without the compiler's code; random trees
# are rendered to text, compiled, and must agree with it on random records.

FIELDS = ("a", "b", "c", "s", "m.k")
ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
COMPARISONS = ("==", "!=", *ORDER)


def kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return "other"


def json_equal(a: Any, b: Any) -> bool:
    if kind(a) != kind(b):
        return False
    if kind(a) == "list":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind(a) == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def sql_equal(a: Any, b: Any) -> bool | None:
    if kind(a) != kind(b) or kind(a) in ("null", "other"):
        return None
    return json_equal(a, b)


def sql_not(v: Any) -> bool | None:
    return (not v) if isinstance(v, bool) else None


def sql_and(a: Any, b: Any) -> bool | None:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return None


def sql_or(a: Any, b: Any) -> bool | None:
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return None


def compare(op: str, a: Any, b: Any) -> bool | None:
    if op == "==":
        return sql_equal(a, b)
    if op == "!=":
        return sql_not(sql_equal(a, b))
    if kind(a) != kind(b) or kind(a) not in ("boolean", "number", "string"):
        return None
    return bool(ORDER[op](a, b))


def member(a: Any, b: Any) -> bool | None:
    if kind(b) == "list":
        out: bool | None = False
        for item in b:
            out = sql_or(out, sql_equal(a, item))
        return out
    if kind(b) == "string" and kind(a) == "string":
        return a in b
    return None


def arith(op: str, a: Any, b: Any) -> Any:
    if kind(a) == "number" and kind(b) == "number":
        try:
            return ARITH[op](a, b)
        except (ZeroDivisionError, OverflowError):
            return None
    if op == "+" and kind(a) == "string" and kind(b) == "string":
        return a + b
    return None


def lookup(record: Mapping[str, Any], path: str) -> Any:
    v: Any = record
    for part in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(part)
    return v


def is_null_literal(node: tuple[Any, ...]) -> bool:
    return node == ("const", None)


def ref_eval(node: tuple[Any, ...], record: Mapping[str, Any]) -> Any:
    kind_ = node[0]
    if kind_ == "const":
        return node[1]
    if kind_ == "field":
        return lookup(record, node[1])
    if kind_ == "list":
        return [ref_eval(item, record) for item in node[1]]
    if kind_ == "neg":
        v = ref_eval(node[1], record)
        return -v if kind(v) == "number" else None
    if kind_ == "not":
        return sql_not(ref_eval(node[1], record))
    if kind_ == "and":
        return sql_and(ref_eval(node[1], record), ref_eval(node[2], record))
    if kind_ == "or":
        return sql_or(ref_eval(node[1], record), ref_eval(node[2], record))
    op, left, right = node[1], node[2], node[3]
    a, b = ref_eval(left, record), ref_eval(right, record)
    if kind_ == "arith":
        return arith(op, a, b)
    if kind_ == "cmp":
        if op in ("==", "!=") and (is_null_literal(left) or is_null_literal(right)):
            other = b if is_null_literal(left) else a
            return (other is None) == (op == "==")  # IS NULL / IS NOT NULL
        return compare(op, a, b)
    assert kind_ == "in"
    found = member(a, b)
    return found if op == "in" else sql_not(found)


def reference(node: tuple[Any, ...], record: Mapping[str, Any]) -> bool | None:
    """The truth of a tree: its value when a boolean, else unknown."""
    v = ref_eval(node, record)
    return v if isinstance(v, bool) else None


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
    kind_ = node[0]
    if kind_ == "const":
        return render_const(node[1])
    if kind_ == "field":
        return str(node[1])
    if kind_ == "list":
        return "[" + ", ".join(render(i) for i in node[1]) + "]"
    if kind_ == "neg":
        return f"(-{render(node[1])})"
    if kind_ == "not":
        return f"(not {render(node[1])})"
    if kind_ in ("and", "or"):
        return f"({render(node[1])} {kind_} {render(node[2])})"
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
        st.tuples(st.just("cmp"), st.sampled_from(COMPARISONS), children, children),
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
scalars = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-10, 10),
    st.sampled_from([float("nan"), 0.0, -0.0, 10**400, 2**53 + 1]),
    st.text("ab", max_size=2),
    st.booleans(),
    st.just(b"a"),
)
values = st.one_of(
    scalars,
    st.lists(st.one_of(st.none(), st.integers(0, 2), st.booleans(), st.just("a")), max_size=2),
    st.dictionaries(st.sampled_from(["k", "j"]), scalars, max_size=2),
)
records = st.dictionaries(st.sampled_from(["a", "b", "c", "s", "m"]), values)


@settings(max_examples=500, deadline=None)
@given(tree=trees, record=records)
def test_matches_the_reference_model(tree: tuple[Any, ...], record: dict[str, Any]) -> None:
    text = render(tree)
    expected = reference(tree, record)
    assert truth(text, record) is expected, text
    assert where_truth(text, record) is expected, text  # tests/reference.py agrees
    # the canonical text (minimal parentheses) means the same
    canonical = canonical_where(text)
    assert truth(canonical, record) is expected, canonical
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
