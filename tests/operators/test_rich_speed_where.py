"""A ``where`` evaluated a batch at a time (``WherePredicate.many``) against the same
predicate event by event, on messy records: missing fields, nulls, booleans next to
numbers, ints beyond float precision, NaN, signed zeros, strings with NUL characters,
lists, objects, subclasses of the JSON types and values of no JSON type."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import PartitionOperator
from streamfeat.topology.definitions import AggKind, FeatureDef, SourceDef, TopologyDef
from streamfeat.topology.expressions import compile_where
from tests.operators.test_partition_operator import make_window

SETTINGS = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Text(str):
    """A subclass of a JSON type (the compiled closures take it the long way)."""


class Number(int):
    pass


FIELDS = ["a", "b", "c", "a.b"]
NUMBERS = ["0", "1", "2", "-1", "1.0", "-0.0", "0.0", "2.5", "1e300", "9007199254740993",
           "18446744073709551616"]
STRINGS = ["'x'", "'y'", "''", "'x\x00'"]
LITERALS = [*NUMBERS, *STRINGS, "true", "false", "null"]
# the items of an ``in`` list: mostly of one kind (the fast shape), sometimes mixed
items_st = st.one_of(*(st.lists(st.sampled_from(group), min_size=1, max_size=3)
                       for group in (NUMBERS, STRINGS, ["true", "false"])),
                     st.lists(st.sampled_from(LITERALS), max_size=3))

values_st = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, 2, -1, 2**53 + 1, 2**63, 2**64, -(2**70)]),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, float("nan"), float("inf"), -float("inf"), 1e300]),
    st.sampled_from(["x", "y", "", "x\x00", "X"]),
    st.sampled_from([[1], ["x"], [], {"b": 1}, {"b": "x"}, {}]),
    st.builds(Text, st.sampled_from(["x", "y"])), st.builds(Number, st.integers(-2, 2)),
    st.just(b"x"), st.just((1,)),
)
CATALOGUE: list[Any] = [None, True, False, 0, 1, 2, -1, 2**53 + 1, 2**63, 2**64, 0.0, -0.0, 1.0,
                        2.5, float("nan"), float("inf"), 1e300, "x", "y", "", "x\x00", [1],
                        ["x"], {"b": 1}, {"b": "x"}, Text("x"), Number(1), b"x", (1,)]
EVERY_VALUE = [{}, *({"a": v, "b": v, "c": v} for v in CATALOGUE),
               *({"a": {"b": v}, "b": w} for v, w in zip(CATALOGUE, reversed(CATALOGUE),
                                                         strict=True))]
"""Records that put every value of the catalogue in every field, so that each expression
drawn meets them all."""
records_st = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), values_st, max_size=3),
                      max_size=40)

# columns whose values are all of one kind (every record has the field): the single pass
# of a leaf whose column holds only values of its constants' kind
one_kind_st = st.sampled_from([
    st.sampled_from(["x", "y", "", "x\x00", "X"]),
    st.one_of(st.sampled_from([0, 1, 2, -1, 2**53 + 1, 2**64]),
              st.sampled_from([0.0, -0.0, 1.0, 2.5, float("nan"), float("inf"), 1e300])),
    st.booleans(),
]).flatmap(lambda kind: st.lists(st.fixed_dictionaries({"a": kind, "b": kind, "c": kind}),
                                 min_size=1, max_size=40))

leaf_st = st.one_of(
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              st.sampled_from(LITERALS)).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(LITERALS), st.sampled_from(["==", "!=", "<", ">="]),
              st.sampled_from(FIELDS)).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["==", "<", "!="]),
              st.sampled_from(FIELDS)).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["in", "not in"]),
              items_st).map(
        lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["in", "not in"])).map(
        lambda t: f"{t[0]} {t[1]} 'xyz'"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["==", "!="]), st.booleans()).map(
        lambda t: f"{t[0]} {t[1]} null" if t[2] else f"null {t[1]} {t[0]}"),
    st.sampled_from(FIELDS),  # a bare field: true only when it is true
    st.sampled_from(["true", "false", "null", "a + 1 > 2", "-a < 0", "a % 2 == 1"]),
)

def _combined(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        inner.map(lambda e: f"not ({e})"),
    )


# deep expressions, and often a negated and/or of two leaves (where falsity matters)
where_st = st.one_of(st.recursive(leaf_st, _combined, max_leaves=6),
                     _combined(_combined(leaf_st)))


@SETTINGS
@given(where_st, st.one_of(records_st.map(lambda rs: [*rs, *EVERY_VALUE]), one_kind_st),
       st.booleans())
def test_many_equals_one_by_one(text: str, records: list[dict[str, Any]],
                                shared: bool) -> None:
    pred = compile_where(text)
    expected = [pred(r) for r in records]
    columns: dict[str, list[Any]] | None = {} if shared else None
    got = pred.many(records, columns)
    assert got.dtype == np.bool_
    assert got.tolist() == expected, text
    if columns is not None:  # the columns read are the records' values, reusable
        again = pred.many(records, columns)
        assert again.tolist() == expected


def test_many_reads_each_field_once_for_several_wheres() -> None:
    records: list[dict[str, Any]] = [{"status": "completed", "amount": 120},
                                     {"status": "cancelled", "amount": 5}, {}]
    columns: dict[str, list[Any]] = {}
    kept = compile_where("status == 'completed'").many(records, columns)
    big = compile_where("amount >= 100 and status != 'cancelled'").many(records, columns)
    assert kept.tolist() == [True, False, False]
    assert big.tolist() == [True, False, False]
    assert columns == {"status": ["completed", "cancelled", None], "amount": [120, 5, None]}


def _one_by_one(text: str) -> Any:
    pred = compile_where(text)
    return lambda r: pred(r)  # a plain function: the operator calls it event by event


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where_st, st.lists(st.tuples(st.sampled_from(["k1", "k2"]), st.integers(0, 20_000),
                                    st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                                    values_st, max_size=3)),
                          min_size=1, max_size=40),
       st.integers(1, 7))
def test_operator_batch_where_equals_per_event(
        text: str, events: list[tuple[str, int, dict[str, Any]]], step: int) -> None:
    """The operator's ``where`` a batch at a time (late events among them) keeps the events
    the per-event predicate keeps."""
    # the positions ("i") of the events kept, the latest 40 of them
    feature = FeatureDef(name="kept", agg=AggKind.LAST_K, k=40, field="i",
                         windows=(make_window("lifetime", 0, 0),), where=text)
    topology = TopologyDef(name="t", source=SourceDef(topic="t", key="k"), entity="k",
                           lateness_ms=1000, features=(feature,))
    fast = PartitionOperator(topology, 0)
    slow = PartitionOperator(topology, 0, where_compiler=_one_by_one)
    for lo in range(0, len(events), step):
        chunk = events[lo:lo + step]
        keys = [k for k, _, _ in chunk]
        ts = [t for _, t, _ in chunk]
        records = [{**r, "i": lo + j} for j, (_, _, r) in enumerate(chunk)]
        assert (fast.process(keys, ts, records).late.tolist()
                == slow.process(keys, ts, records).late.tolist())
    assert fast.values(["k1", "k2"]) == slow.values(["k1", "k2"])
    assert fast.dump_all() == slow.dump_all()
