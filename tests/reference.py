"""A deliberately naive implementation of the contract (sections 2 and 3), for tests.

It keeps every accepted event and, for any instant t, filters them with the window's
definition and aggregates with plain Python. Slow and obviously right: the operators and
the worker are compared with it.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamfeat.topology import AggKind, FeatureDef, TopologyDef, WindowDef, WindowKind
from streamfeat.topology.definitions import MAX_EVENT_TIME_MS


@dataclass
class Event:
    key: str
    ts: int
    seq: int  # arrival order within the partition
    record: Mapping[str, Any]


@dataclass
class Partition:
    stream_time: int | None = None
    accepted: list[Event] = field(default_factory=list)
    late: int = 0
    malformed: int = 0
    dead: list[int] = field(default_factory=list)  # arrival order (seq) of each late or
    # malformed record: each is one dead letter


def naive_decode(
    topology: TopologyDef, value: bytes | None, kafka_ts: int | None = None
) -> tuple[str, int, dict[str, Any]] | None:
    """The contract's malformed-record rules, written out plainly. None = malformed.

    Event times (section 3): negative, not finite, after 9999-12-31 or later than the
    record's Kafka timestamp ``kafka_ts`` by more than ``max_future``: malformed. Without
    ``kafka_ts`` the record is taken as stamped at its own event time (as the generator
    stamps records), so only the range is checked.
    """
    try:
        record = json.loads(value) if value is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    key = record.get(topology.source.key)
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        return None
    ts = record.get(topology.source.timestamp or "")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        return None
    for f in topology.features:
        if f.field and f.agg.numeric:
            v = record.get(f.field)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                return None
    ms = ts * 1000 if topology.source.timestamp_unit == "s" else ts
    if ms > MAX_EVENT_TIME_MS:
        return None
    stamped = round(ms) if kafka_ts is None else kafka_ts
    if stamped < 0 or round(ms) - stamped > topology.max_future_ms:
        return None
    return str(key), round(ms), record


def run_partition(topology: TopologyDef, values: Iterable[bytes | None],
                  kafka_ts: Iterable[int] | None = None) -> Partition:
    """Late decisions in offset order, exactly as the contract defines them.

    ``kafka_ts``: the records' Kafka timestamps, for the ``max_future`` rule (see
    :func:`naive_decode`)."""
    p = Partition()
    values = list(values)
    stamps = list(kafka_ts) if kafka_ts is not None else None
    assert stamps is None or len(stamps) == len(values), (len(stamps), len(values))
    for seq, value in enumerate(values):
        decoded = naive_decode(topology, value, stamps[seq] if stamps is not None else None)
        if decoded is None:
            p.malformed += 1
            p.dead.append(seq)
            continue
        key, ts, record = decoded
        if p.stream_time is not None and ts < p.stream_time - topology.lateness_ms:
            p.late += 1
            p.dead.append(seq)
            continue
        p.stream_time = ts if p.stream_time is None else max(p.stream_time, ts)
        p.accepted.append(Event(key, ts, seq, record))
    return p


def in_window(w: WindowDef, ts: int, t: int) -> bool:
    if ts > t:
        return False
    if w.kind is WindowKind.LIFETIME:
        return True
    assert w.size_ms is not None
    if w.kind in (WindowKind.SLIDING, WindowKind.HOPPING):
        if w.exact or w.hop_ms is None:
            return t - w.size_ms < ts
        return math.floor((t - w.size_ms) / w.hop_ms) * w.hop_ms <= ts
    if w.kind is WindowKind.TUMBLING:
        start = (t // w.size_ms) * w.size_ms
        if w.emit_final:
            return start - w.size_ms <= ts < start
        return start <= ts
    raise AssertionError(w.kind)


def session_events(w: WindowDef, events: list[Event], t: int) -> list[Event]:
    assert w.size_ms is not None
    seen = sorted((e for e in events if e.ts <= t), key=lambda e: (e.ts, e.seq))
    if not seen or t - seen[-1].ts >= w.size_ms:
        return []
    out = [seen[-1]]
    for e in reversed(seen[:-1]):
        if out[-1].ts - e.ts < w.size_ms:
            out.append(e)
        else:
            break
    return out


# --------------------------------------------------------------------------- where
# The contract's `where` (section 2: SQL's three-valued logic), parsed and evaluated here
# from scratch: a recursive-descent parser into tuples and a plain interpreter, sharing
# no code with streamfeat.topology.expressions. None is null, which is also "unknown".

_WHERE_OPS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", "[", "]",
              ",")
_WHERE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _where_tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and text[i + 1 : i + 2].isdigit()):
            m = re.match(r"\d*(\.\d+)?([eE][+-]?\d+)?", text[i:])
            assert m is not None
            word = m.group(0)
            out.append(("value", float(word) if m.group(1) or m.group(2) else int(word)))
            i += len(word)
        elif c.isalpha() or c == "_":
            m = re.match(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text[i:])
            assert m is not None
            word = m.group(0)
            literals = {"true": True, "false": False, "null": None}
            if word in literals:
                out.append(("value", literals[word]))
            elif word in ("and", "or", "not", "in"):
                out.append(("op", word))
            else:
                out.append(("field", word.split(".")))
            i += len(word)
        elif c in "'\"":
            j, chars = i + 1, []
            while text[j] != c:
                if text[j] == "\\":
                    chars.append(_WHERE_ESCAPES[text[j + 1]])
                    j += 2
                else:
                    chars.append(text[j])
                    j += 1
            out.append(("value", "".join(chars)))
            i = j + 1
        else:
            op = next(o for o in _WHERE_OPS if text.startswith(o, i))
            out.append(("op", op))
            i += len(op)
    out.append(("end", None))
    return out


class _WhereParser:
    """expr: or; or: and {or and}; and: not {and not}; not: 'not' not | cmp;
    cmp: sum [op sum]; sum: prod {+- prod}; prod: unary {*/% unary}; unary: '-' unary |
    primary."""

    def __init__(self, text: str) -> None:
        self.tokens = _where_tokens(text)
        self.i = 0

    def peek(self, *ops: str) -> bool:
        kind, value = self.tokens[self.i]
        return kind == "op" and value in ops

    def take(self) -> tuple[str, Any]:
        self.i += 1
        return self.tokens[self.i - 1]

    def parse(self) -> tuple[Any, ...]:
        node = self.disjunction()
        assert self.tokens[self.i][0] == "end", self.tokens[self.i]
        return node

    def disjunction(self) -> tuple[Any, ...]:
        node = self.conjunction()
        while self.peek("or"):
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> tuple[Any, ...]:
        node = self.negation()
        while self.peek("and"):
            self.take()
            node = ("and", node, self.negation())
        return node

    def negation(self) -> tuple[Any, ...]:
        if self.peek("not"):
            self.take()
            return ("not", self.negation())
        return self.comparison()

    def comparison(self) -> tuple[Any, ...]:
        left = self.sum()
        if self.peek("==", "!=", "<", "<=", ">", ">=", "in"):
            op = self.take()[1]
            return ("cmp", op, left, self.sum())
        if self.peek("not"):  # not in
            self.take()
            assert self.take() == ("op", "in")
            return ("not", ("cmp", "in", left, self.sum()))
        return left

    def sum(self) -> tuple[Any, ...]:
        node = self.product()
        while self.peek("+", "-"):
            node = ("arith", self.take()[1], node, self.product())
        return node

    def product(self) -> tuple[Any, ...]:
        node = self.unary()
        while self.peek("*", "/", "%"):
            node = ("arith", self.take()[1], node, self.unary())
        return node

    def unary(self) -> tuple[Any, ...]:
        if self.peek("-"):
            self.take()
            return ("neg", self.unary())
        kind, value = self.take()
        if kind in ("value", "field"):
            return (kind, value)
        if value == "(":
            node = self.disjunction()
            assert self.take() == ("op", ")")
            return node
        assert value == "[", (kind, value)
        items = []
        while not self.peek("]"):
            items.append(self.disjunction())
            if self.peek(","):
                self.take()
        self.take()
        return ("list", items)


def _where_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "list"
    if isinstance(v, Mapping):
        return "object"
    return "other"


def _where_same(a: Any, b: Any) -> bool:
    """Equality of JSON values: kind by kind, item by item (null equals null inside)."""
    if _where_kind(a) != _where_kind(b):
        return False
    if _where_kind(a) == "list":
        return len(a) == len(b) and all(map(_where_same, a, b))
    if _where_kind(a) == "object":
        return set(a) == set(b) and all(_where_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _where_depth(v: Any) -> int:
    """How deep lists and objects nest in ``v`` (``[]`` is 1, a scalar 0)."""
    items = v if _where_kind(v) == "list" else v.values() if _where_kind(v) == "object" else None
    return 0 if items is None else 1 + max(map(_where_depth, items), default=0)


def _where_equal(a: Any, b: Any) -> bool | None:
    if a is None or b is None or _where_kind(a) != _where_kind(b) or _where_kind(a) == "other":
        return None
    if max(_where_depth(a), _where_depth(b)) > 64:  # too deep to compare: unknown
        return None
    return _where_same(a, b)


def _where_not(v: Any) -> bool | None:
    return None if v is None or not isinstance(v, bool) else not v


def _where_eval(node: tuple[Any, ...], record: Mapping[str, Any]) -> Any:
    tag = node[0]
    if tag == "value":
        return node[1]
    if tag == "field":
        v: Any = record
        for part in node[1]:
            v = v.get(part) if isinstance(v, Mapping) else None
        return v
    if tag == "list":
        return [_where_eval(item, record) for item in node[1]]
    if tag == "neg":
        v = _where_eval(node[1], record)
        return -v if _where_kind(v) == "number" else None
    if tag == "not":
        return _where_not(_where_eval(node[1], record))
    if tag in ("and", "or"):
        a, b = _where_eval(node[1], record), _where_eval(node[2], record)
        truths = {x if isinstance(x, bool) else None for x in (a, b)}
        if tag == "and":
            return False if False in truths else (True if truths == {True} else None)
        return True if True in truths else (False if truths == {False} else None)
    op, left, right = node[1], node[2], node[3]
    a, b = _where_eval(left, record), _where_eval(right, record)
    if tag == "arith":
        if _where_kind(a) == "number" and _where_kind(b) == "number":
            try:
                return {"+": operator.add, "-": operator.sub, "*": operator.mul,
                        "/": operator.truediv, "%": operator.mod}[op](a, b)
            except (ZeroDivisionError, OverflowError):
                return None
        if op == "+" and _where_kind(a) == _where_kind(b) == "string":
            return a + b
        return None
    if op in ("==", "!=") and ("value", None) in (left, right):  # IS NULL, IS NOT NULL
        other = b if left == ("value", None) else a
        return (other is None) is (op == "==")
    if op == "==":
        return _where_equal(a, b)
    if op == "!=":
        return _where_not(_where_equal(a, b))
    if op == "in":
        if _where_kind(b) == "list":  # x in [p, q] is x == p or x == q
            answers = [_where_equal(a, item) for item in b]
            return True if True in answers else (None if None in answers else False)
        if _where_kind(a) == _where_kind(b) == "string":
            return a in b
        return None
    if _where_kind(a) != _where_kind(b) or _where_kind(a) not in ("boolean", "number", "string"):
        return None
    return {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op](a, b)


@functools.lru_cache(maxsize=256)
def _where_tree(text: str) -> tuple[Any, ...]:
    return _WhereParser(text).parse()


def where_truth(text: str, record: Mapping[str, Any]) -> bool | None:
    """The truth of a ``where`` for one event: True, False or None (unknown)."""
    v = _where_eval(_where_tree(text), record)
    return v if isinstance(v, bool) else None


def aggregate(f: FeatureDef, events: list[Event]) -> Any:
    if f.where is not None:  # kept only when the where is true (not false, not unknown)
        where = _where_tree(f.where)
        events = [e for e in events if _where_eval(where, e.record) is True]
    if f.agg is AggKind.COUNT:
        return len(events)
    assert f.field is not None
    present = [e for e in events if e.record.get(f.field) is not None]
    vals = [e.record[f.field] for e in present]
    if f.agg is AggKind.SUM:
        return math.fsum(vals) if vals else 0
    if not vals:
        return None
    if f.agg is AggKind.MEAN:
        return math.fsum(vals) / len(vals)
    if f.agg is AggKind.MIN:
        return min(vals)
    if f.agg is AggKind.MAX:
        return max(vals)
    if f.agg is AggKind.VAR:
        return statistics.pvariance([float(v) for v in vals])
    if f.agg is AggKind.STDDEV:
        return math.sqrt(statistics.pvariance([float(v) for v in vals]))
    if f.agg is AggKind.COUNT_DISTINCT:
        return len({json.dumps(v) for v in vals})
    if f.agg is AggKind.PERCENTILE:
        ordered = sorted(vals)
        assert f.q is not None
        return ordered[math.floor(f.q * (len(ordered) - 1))]
    by_time = sorted(present, key=lambda e: (e.ts, e.seq))
    if f.agg is AggKind.FIRST:
        return by_time[0].record[f.field]
    if f.agg is AggKind.LAST:
        return by_time[-1].record[f.field]
    if f.agg is AggKind.LAST_K:
        assert f.k is not None
        return [e.record[f.field] for e in reversed(by_time)][: f.k]
    if f.agg is AggKind.TOP_K:
        assert f.k is not None
        counts = Counter(vals)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [[v, c] for v, c in ranked[: f.k]]
    raise AssertionError(f.agg)


def values_as_of(topology: TopologyDef, events: list[Event], t: int) -> dict[str, Any]:
    """Every Redis field of one entity as of t."""
    out: dict[str, Any] = {}
    for f in topology.features:
        for w in f.windows:
            if w.kind is WindowKind.SESSION:
                chosen = session_events(w, events, t)
            else:
                chosen = [e for e in events if in_window(w, e.ts, t)]
            out[f.redis_field(w)] = aggregate(f, chosen)
    return out


@dataclass
class Expected:
    """What the contract says a run over a topic ends with."""

    values: dict[str, dict[str, Any]]  # entity -> every Redis field as of the end
    late: int
    malformed: int
    dead: dict[int, list[int]]  # partition -> arrival order (seq) of each dead letter's record


def expected_run(topology: TopologyDef, partitions: Mapping[int, list[bytes | None]],
                 kafka_ts: Mapping[int, list[int]] | None = None) -> Expected:
    """Values of every entity as of its partition's final stream time, and the dead letters.

    ``kafka_ts``: each partition's Kafka timestamps, for the ``max_future`` rule."""
    out = Expected({}, 0, 0, {})
    for part, values in partitions.items():
        p = run_partition(topology, values, kafka_ts[part] if kafka_ts is not None else None)
        out.late += p.late
        out.malformed += p.malformed
        out.dead[part] = p.dead
        by_entity: dict[str, list[Event]] = defaultdict(list)
        for e in p.accepted:
            by_entity[e.key].append(e)
        for key, events in by_entity.items():
            assert p.stream_time is not None
            out.values[key] = values_as_of(topology, events, p.stream_time)
    return out


def expected_final(topology: TopologyDef, partitions: Mapping[int, list[bytes | None]]) -> tuple[
    dict[str, dict[str, Any]], int, int
]:
    """Values of every entity as of its partition's final stream time; late and malformed counts."""
    run = expected_run(topology, partitions)
    return run.values, run.late, run.malformed


def close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal, with a relative tolerance for floats (also inside lists)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return bool(a == b)
