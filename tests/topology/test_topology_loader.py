"""The topology loader: every rejection, with its exact line, and the happy paths."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from streamfeat.errors import StreamfeatError, TopologyError
from streamfeat.topology import (
    AggKind,
    FeatureDef,
    TopologyDef,
    WindowDef,
    WindowKind,
    default_hop_ms,
    load_topology,
    load_topology_text,
    parse_duration,
)
from streamfeat.topology.definitions import MAX_DURATION_MS, MAX_EVENT_TIME_MS

ROOT = Path(__file__).resolve().parents[2]
ONE_FEATURE = "features: [{name: n, agg: count, windows: [1h]}]\n"

# Lines 1-8: the header every case below shares; features start at line 9.
HEADER = """\
version: 1
name: orders
source:
  topic: orders
  key: user_id
  timestamp: ts
lateness: 5m
features:
"""


def load(features: str, extra: str = "") -> TopologyDef:
    return load_topology_text(HEADER + textwrap.dedent(features) + textwrap.dedent(extra), "t.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_topology_text(textwrap.dedent(text), "t.yaml")
    return info.value.problems


def feature_problems(features: str, extra: str = "") -> list[str]:
    return problems(HEADER + textwrap.dedent(features) + textwrap.dedent(extra))


def only(found: list[str], line: int, *fragments: str) -> None:
    assert len(found) == 1, found
    assert found[0].startswith(f"t.yaml:{line}: "), found
    for fragment in fragments:
        assert fragment in found[0], found


# ------------------------------------------------------------------ happy paths


def test_contract_example_loads() -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    assert topology.name == "orders"
    assert topology.source.topic == "orders"
    assert topology.source.key == "user_id"
    assert topology.source.timestamp == "ts"
    assert topology.lateness_ms == 5 * 60_000
    assert topology.ttl_ms == 8 * 86_400_000
    assert topology.freshness_ms == 1000
    fields = topology.redis_fields()
    for expected in (
        "orders__5m",
        "orders_hourly__1h",
        "lifetime_orders__lifetime",
        "session_orders__session_30m",
        "cancelled__10m",
    ):
        assert expected in fields
    assert len(fields) == len(set(fields))
    kinds = {w.kind for f in topology.features for w in f.windows}
    assert kinds == set(WindowKind)
    aggs = {f.agg for f in topology.features}
    assert aggs == set(AggKind)
    assert any(w.exact for f in topology.features for w in f.windows)
    assert any(w.emit_final for f in topology.features for w in f.windows)
    assert topology.defaults["orders__7d"] == 0
    assert topology.defaults["last_amounts__lifetime"] == []
    assert topology.path.endswith("orders.yaml")


def test_minimal_topology_defaults() -> None:
    topology = load("""\
        - name: n
          agg: count
          windows: [5m]
    """)
    assert topology.version == 1
    assert topology.source.format == "json"
    assert topology.source.timestamp_unit == "ms"
    assert topology.freshness_ms == 1000
    assert topology.ttl_ms is None
    assert topology.defaults == {}
    feature = topology.features[0]
    assert feature.line == 9
    assert feature.windows == (WindowDef(WindowKind.SLIDING, 300_000, 5_000, "5m"),)


@pytest.mark.parametrize(
    ("window", "hop"),
    [
        ("30s", 1_000),
        ("1m", 1_000),
        ("5m", 5_000),
        ("10m", 10_000),
        ("30m", 30_000),
        ("1h", 60_000),
        ("5h", 300_000),
        ("10h", 600_000),
        ("1d", 600_000),
        ("2d", 1_800_000),
        ("3d", 3_600_000),
        ("7d", 3_600_000),
        ("60d", 86_400_000),
        ("1500ms", 1_000),
    ],
)
def test_default_hop_rule(window: str, hop: int) -> None:
    feature = load(f"""\
        - name: n
          agg: count
          windows: [{window}]
    """).features[0]
    assert feature.windows[0].hop_ms == hop
    # the contract: the largest candidate not above W/60, else 1s
    size = parse_duration(window)
    assert hop == default_hop_ms(size)
    assert hop * 60 <= size or hop == 1_000


def test_window_forms_and_labels() -> None:
    windows = (
        load("""\
        - name: n
          agg: count
          windows:
            - 60m
            - lifetime
            - {size: 90s, hop: exact}
            - {size: 2h, hop: 10m}
            - {size: 1d, type: tumbling}
            - {size: 1h, type: tumbling, emit: final, name: last_hour}
            - {size: 1h, type: hopping, step: 15m, name: h15}
            - {type: session, gap: 30m}
            - {type: lifetime, name: ever}
            - {size: 7d, type: sliding}
    """)
        .features[0]
        .windows
    )
    assert [w.label for w in windows] == [
        "1h",
        "lifetime",
        "90s",
        "2h",
        "1d",
        "last_hour",
        "h15",
        "session_30m",
        "ever",
        "7d",
    ]
    assert windows[0] == WindowDef(WindowKind.SLIDING, 3_600_000, 60_000, "1h")
    assert windows[1] == WindowDef(WindowKind.LIFETIME, None, None, "lifetime")
    assert windows[2] == WindowDef(WindowKind.SLIDING, 90_000, None, "90s", exact=True)
    assert windows[3].hop_ms == 600_000
    assert windows[4] == WindowDef(WindowKind.TUMBLING, 86_400_000, 86_400_000, "1d")
    assert windows[5].emit_final
    assert windows[6] == WindowDef(WindowKind.HOPPING, 3_600_000, 900_000, "h15")
    assert windows[7] == WindowDef(WindowKind.SESSION, 1_800_000, None, "session_30m")
    assert windows[9].hop_ms == 3_600_000


def test_agg_parameters_are_kept() -> None:
    features = load("""\
        - name: p
          agg: percentile
          field: amount
          q: 0.5
          windows: [1h]
        - name: lk
          agg: last_k
          field: amount
          k: 3
          windows: [1h]
        - name: cd
          agg: count_distinct
          field: merchant_id
          exact_up_to: 50
          windows: [1h]
        - name: cd2
          agg: count_distinct
          field: merchant_id
          windows: [1h]
    """).features
    assert features[0].q == 0.5
    assert features[1].k == 3
    assert features[2].exact_up_to == 50
    assert features[3].exact_up_to == 1000
    assert [f.line for f in features] == [9, 14, 19, 24]


def test_where_is_stored_canonically() -> None:
    feature = load("""\
        - name: n
          agg: count
          where: "(status=='completed')  and amount>1"
          windows: [1h]
    """).features[0]
    assert feature.where == "status == 'completed' and amount > 1"


def test_defaults_normalized_to_redis_fields() -> None:
    topology = load(
        """\
        - name: n
          agg: count
          windows: [5m, 1h]
        - name: lk
          agg: last_k
          field: x
          k: 2
          windows: [lifetime]
        - name: last_s
          agg: last
          field: s
          windows: [lifetime]
        """,
        """\
        defaults:
          n__1h: 7
          n: 0
          lk: [1, 2]
          last_s: none
        """,
    )
    assert topology.defaults == {
        "n__5m": 0,
        "n__1h": 7,
        "lk__lifetime": [1, 2],
        "last_s__lifetime": "none",
    }


def test_source_options_and_zero_lateness() -> None:
    topology = load_topology_text(
        textwrap.dedent("""\
        name: clicks-v2
        source: {topic: clicks, key: uid, format: msgpack, timestamp_unit: iso8601}
        lateness: 0
        ttl: 1d
        freshness: 500ms
        owner: me
        entity: user
        description: clicks
        features: [{name: c, agg: count, windows: [1m]}]
    """)
    )
    assert topology.source.format == "msgpack"
    assert topology.source.timestamp_unit == "iso8601"
    assert topology.source.timestamp is None
    assert topology.lateness_ms == 0
    assert topology.freshness_ms == 500
    assert (topology.owner, topology.entity, topology.description) == ("me", "user", "clicks")


def test_max_future_and_keyed_by_entity() -> None:
    """Contract section 3: max_future (default 1h, 0 allowed) bounds an event time from its
    record's Kafka timestamp; keyed_by_entity (default true) says whether the topic's
    records are keyed by the entity id."""
    default = load("- {name: n, agg: count, windows: [1h]}\n")
    assert default.max_future_ms == 3_600_000
    assert default.source.keyed_by_entity is True
    for text, ms in (("30m", 1_800_000), ("0", 0), ("0s", 0), ("365000d", 365_000 * 86_400_000)):
        topology = load("- {name: n, agg: count, windows: [1h]}\n", f"max_future: {text}\n")
        assert topology.max_future_ms == ms
    for text, keyed in (("false", False), ("true", True), ("no", False)):  # YAML 1.1 booleans
        topology = load_topology_text(
            f"name: t\nsource: {{topic: o, key: k, keyed_by_entity: {text}}}\n{ONE_FEATURE}")
        assert topology.source.keyed_by_entity is keyed


def test_yaml_merge_keys_are_supported() -> None:
    features = load("""\
        - &base {name: a, agg: sum, field: amount, windows: [1h]}
        - <<: *base
          name: b
    """).features
    assert [(f.name, f.field) for f in features] == [("a", "amount"), ("b", "amount")]


# ------------------------------------------------------------------ state hash


def _one(features: str) -> FeatureDef:
    return load(features).features[0]


BASE = """\
- name: n
  agg: sum
  field: amount
  where: "status == 'completed'"
  windows: [1h]
"""


def test_state_hash_ignores_name_and_where_formatting() -> None:
    base = _one(BASE)
    renamed = _one(BASE.replace("name: n", "name: other"))
    reformatted = _one(BASE.replace("status == 'completed'", "(status=='completed')"))
    spelled = _one(BASE.replace("[1h]", "[60m]"))
    h = base.state_hash(base.windows[0])
    assert renamed.state_hash(renamed.windows[0]) == h
    assert reformatted.state_hash(reformatted.windows[0]) == h
    assert spelled.state_hash(spelled.windows[0]) == h


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("agg: sum", "agg: max"),
        ("field: amount", "field: price"),
        ("status == 'completed'", "status == 'pending'"),
        ("[1h]", "[2h]"),
        ("[1h]", "[{size: 1h, hop: exact}]"),
        ("[1h]", "[{size: 1h, hop: 5m}]"),
        ("[1h]", "[{size: 1h, type: tumbling}]"),
        ("[1h]", "[{size: 1h, type: tumbling, emit: final}]"),
        ("[1h]", "[{size: 1h, type: hopping, step: 1m}]"),
    ],
)
def test_state_hash_changes_with_definition(old: str, new: str) -> None:
    base = _one(BASE)
    changed = _one(BASE.replace(old, new))
    assert changed.state_hash(changed.windows[0]) != base.state_hash(base.windows[0])


def test_state_hash_changes_with_q_and_k() -> None:
    p1 = _one("- {name: p, agg: percentile, field: a, q: 0.5, windows: [1h]}")
    p2 = _one("- {name: p, agg: percentile, field: a, q: 0.9, windows: [1h]}")
    assert p1.state_hash(p1.windows[0]) != p2.state_hash(p2.windows[0])
    k1 = _one("- {name: t, agg: top_k, field: a, k: 1, windows: [1h]}")
    k2 = _one("- {name: t, agg: top_k, field: a, k: 2, windows: [1h]}")
    assert k1.state_hash(k1.windows[0]) != k2.state_hash(k2.windows[0])


# ------------------------------------------------------------------ rejections, one by one


def test_unknown_top_level_key_suggests() -> None:
    found = problems("""\
        name: orders
        source: {topic: orders, key: user_id}
        featurs: []
        features: [{name: n, agg: count, windows: [1h]}]
    """)
    only(found, 3, "unknown key 'featurs'", "did you mean 'features'?")


def test_unknown_source_key() -> None:
    found = problems("""\
        name: orders
        source:
          topic: orders
          key: user_id
          timestamp_units: ms
        features: [{name: n, agg: count, windows: [1h]}]
    """)
    only(found, 5, "'timestamp_units'", "did you mean 'timestamp_unit'?")


def test_unknown_feature_key() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          window: [1h]
          windows: [1h]
    """),
        11,
        "unknown key 'window'",
        "did you mean 'windows'?",
    )


def test_unknown_window_key() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          windows:
            - size: 1h
              hops: 5m
    """),
        13,
        "unknown key 'hops'",
        "did you mean 'hop'?",
    )


def test_repeated_key() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          agg: sum
          windows: [1h]
    """),
        11,
        "'agg' appears twice",
    )


def test_unknown_aggregation_lists_valid() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: summ
          field: x
          windows: [1h]
    """),
        10,
        "unknown aggregation 'summ'",
        "did you mean 'sum'?",
        "valid: count, sum, mean",
    )


@pytest.mark.parametrize("agg", [a.value for a in AggKind if a is not AggKind.COUNT])
def test_missing_field(agg: str) -> None:
    extra = {"percentile": "  q: 0.5\n", "last_k": "  k: 2\n", "top_k": "  k: 2\n"}.get(agg, "")
    found = feature_problems(f"- name: n\n  agg: {agg}\n{extra}  windows: [1h]\n")
    only(found, 9, f"aggregation {agg} needs a field", "add field:")


def test_field_on_count() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          field: x
          windows: [1h]
    """),
        11,
        "count counts events and takes no field",
    )


@pytest.mark.parametrize(
    ("q_line", "fragment"),
    [
        ("", "percentile needs q"),
        ("  q: 0\n", "strictly between 0 and 1"),
        ("  q: 1\n", "strictly between"),
        ("  q: 1.5\n", "strictly between"),
        ("  q: high\n", "strictly between"),
        ("  q: true\n", "strictly between"),
    ],
)
def test_percentile_q(q_line: str, fragment: str) -> None:
    found = feature_problems(f"- name: n\n  agg: percentile\n  field: x\n{q_line}  windows: [1h]\n")
    only(found, 12 if q_line else 9, fragment)


@pytest.mark.parametrize("agg", ["last_k", "top_k"])
@pytest.mark.parametrize(
    ("k_line", "fragment"),
    [
        ("", "needs k"),
        ("  k: 0\n", "integer >= 1"),
        ("  k: -3\n", "integer >= 1"),
        ("  k: 2.5\n", "integer >= 1"),
        ("  k: ten\n", "integer >= 1"),
    ],
)
def test_k(agg: str, k_line: str, fragment: str) -> None:
    found = feature_problems(f"- name: n\n  agg: {agg}\n  field: x\n{k_line}  windows: [1h]\n")
    only(found, 12 if k_line else 9, fragment)


def test_parameters_on_the_wrong_agg() -> None:
    found = feature_problems("""\
        - name: n
          agg: sum
          field: x
          q: 0.5
          k: 3
          exact_up_to: 10
          windows: [1h]
    """)
    assert [p.split(": ", 1)[0] for p in found] == ["t.yaml:12", "t.yaml:13", "t.yaml:14"]
    assert "q is only for percentile" in found[0]
    assert "k is only for last_k and top_k" in found[1]
    assert "exact_up_to is only for count_distinct" in found[2]


def test_bad_exact_up_to() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count_distinct
          field: x
          exact_up_to: 0
          windows: [1h]
    """),
        12,
        "exact_up_to must be an integer >= 1",
    )


@pytest.mark.parametrize(
    ("window", "fragment"),
    [
        ("5", "needs a unit"),
        ("5x", "bad duration '5x'"),
        ("1.5h", "bad duration"),
        ("0s", "greater than zero"),
        ("-5m", "bad duration"),
        ("5 minutes", "bad duration"),
        ("forever", "bad duration 'forever'"),
        ("5M", "bad duration"),
        ("365001d", "longer than the longest streamfeat accepts, 365000d"),
        ("99999999999999999999999h", "longer than the longest"),
    ],
)
def test_bad_window_duration(window: str, fragment: str) -> None:
    found = feature_problems(f"- name: n\n  agg: count\n  windows:\n    - {window}\n")
    only(found, 12, fragment)


@pytest.mark.parametrize(
    ("window", "fragment"),
    [
        ("{size: 1h, hop: 2h}", "hop 2h is larger than the window size 1h"),
        ("{size: 1h, hop: 0m}", "greater than zero"),
        ("{size: 1h, hop: fast}", "bad duration 'fast'"),
        ("{size: 1h, type: hopping}", "needs step"),
        ("{size: 1h, type: hopping, step: 2h}", "step 2h is larger"),
        ("{size: 1h, type: hopping, hop: 5m, step: 5m}", "'hop' does not apply to a hopping"),
        ("{type: session}", "needs gap"),
        ("{type: session, gap: 30m, size: 1h}", "'size' does not apply to a session"),
        ("{type: tumbling}", "needs size"),
        ("{size: 1h, type: tumbling, emit: last}", "emit must be one of current | final"),
        ("{size: 1h, emit: final}", "'emit' does not apply to a sliding"),
        ("{size: 1h, type: rolling}", "window type must be one of sliding | tumbling"),
        ("{size: 1h, name: a__b}", "window name 'a__b'"),
        ("{size: 1h, name: _x}", "window name '_x'"),
        ("{type: lifetime, size: 1h}", "'size' does not apply to a lifetime"),
    ],
)
def test_bad_window_dict(window: str, fragment: str) -> None:
    found = feature_problems(f"- name: n\n  agg: count\n  windows:\n    - {window}\n")
    only(found, 12, fragment)


def test_empty_windows() -> None:
    only(feature_problems("- name: n\n  agg: count\n  windows: []\n"), 11, "non-empty list")


def test_duplicate_feature_names() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          windows: [1h]
        - name: n
          agg: count
          windows: [1d]
    """),
        12,
        "duplicate feature name 'n' (first at line 9)",
    )


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("_asof", "reserved"),
        ("_x", "reserved"),
        ("a__b", "contains '__'"),
        ("9lives", "must match"),
        ("a-b", "must match"),
        ("'a b'", "must match"),
        ("''", "non-empty"),
    ],
)
def test_bad_feature_name(name: str, fragment: str) -> None:
    found = feature_problems(f"- name: {name}\n  agg: count\n  windows: [1h]\n")
    only(found, 9, fragment)


def test_redis_field_collision_within_a_feature() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          windows:
            - 5m
            - 300s
    """),
        13,
        "Redis field 'n__5m' is produced twice (also at line 12)",
    )


def test_redis_field_collision_through_window_name() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          windows:
            - 1h
            - {size: 2h, type: tumbling, name: 1h}
    """),
        13,
        "'n__1h' is produced twice",
    )


def test_where_that_does_not_parse() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          where: "status = 'completed'"
          windows: [1h]
    """),
        11,
        "where does not parse at column 8",
        "use '=='",
    )


def test_where_must_be_text() -> None:
    only(
        feature_problems("""\
        - name: n
          agg: count
          where: [a]
          windows: [1h]
    """),
        11,
        "where must be a quoted expression",
    )


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ("{topic: orders, key: k, format: xml}", 2,
         "source.format must be one of json | msgpack | avro | protobuf, got 'xml'"),
        ("{topic: orders, key: k, format: avro}", 2, "format avro needs schema"),
        (
            "{topic: orders, key: k, timestamp_unit: us}",
            2,
            "source.timestamp_unit must be one of ms | s | iso8601",
        ),
        ("{key: k}", 2, "missing required key 'topic'"),
        ("{topic: orders}", 2, "missing required key 'key'"),
        ("{topic: o, key: k, keyed_by_entity: 1}", 2,
         "source.keyed_by_entity must be true or false (whether the topic's records are keyed "
         "by the entity id), got 1"),
        ("{topic: o, key: k, keyed_by_entity: 'false'}", 2, "must be true or false"),
        ("{topic: o, key: k, keyed_by_entity: [true]}", 2, "must be true or false"),
        ("{topic: o, key: k, keyed_by: true}", 2, "did you mean 'keyed_by_entity'?"),
        ("{topic: '', key: k}", 2, "source.topic must be a non-empty string"),
        ("orders", 2, "source must be a mapping"),
    ],
)
def test_bad_source(source: str, line: int, fragment: str) -> None:
    found = problems(f"name: t\nsource: {source}\n{ONE_FEATURE}")
    only(found, line, fragment)


@pytest.mark.parametrize(
    ("line_text", "fragment"),
    [
        ("version: 2", "unsupported version 2"),
        ("version: '1'", "unsupported version '1'"),
        ("lateness: 5", "needs a unit"),
        ("lateness: soon", "bad duration"),
        ("ttl: 0d", "ttl must be greater than zero"),
        ("ttl: 1w", "bad duration '1w'"),
        ("freshness: 0s", "freshness must be greater than zero"),
        ("freshness: 1.5s", "bad duration"),
        ("max_future: 5", "max_future: a duration needs a unit"),
        ("max_future: soon", "max_future: bad duration 'soon'"),
        ("max_future: -1h", "max_future: bad duration"),
        ("max_future: 365001d", "max_future: duration '365001d' is longer than"),
        ("lateness: 365001d", "lateness: duration '365001d' is longer than"),
        ("max_futur: 1h", "did you mean 'max_future'?"),
        ("name: 'a:b'", "must match [A-Za-z][A-Za-z0-9_-]*"),
        ("owner: [a]", "owner must be a non-empty string"),
    ],
)
def test_bad_top_level_values(line_text: str, fragment: str) -> None:
    text = f"{line_text}\nsource: {{topic: o, key: k}}\n{ONE_FEATURE}"
    if not line_text.startswith("name:"):
        text = "name: t\n" + text
        line = 2
    else:
        line = 1
    only(problems(text), line, fragment)


def test_missing_required_top_level_keys() -> None:
    found = problems("owner: me\n")
    assert found == [
        "t.yaml:1: missing required key 'name' at the top level; add it",
        "t.yaml:1: missing required key 'source' at the top level; add it",
        "t.yaml:1: missing required key 'features' at the top level; add it",
    ]


def test_missing_required_feature_keys() -> None:
    found = feature_problems("- {name: n}\n")
    assert found == [
        "t.yaml:9: feature: missing required key 'agg'; add it",
        "t.yaml:9: feature: missing required key 'windows'; add it",
    ]


def test_features_must_be_a_list() -> None:
    only(problems("name: t\nsource: {topic: o, key: k}\nfeatures: {}\n"), 3, "non-empty list")


@pytest.mark.parametrize(
    ("defaults", "fragment"),
    [
        ("  ordrs: 0", "'ordrs' names no feature"),
        ("  n__2h: 0", "'n__2h' names no feature"),
        ("  n: zero", "default for 'n' (count) must be a number"),
        ("  n: true", "must be a number"),
        ("  lk: 3", "(last_k) must be a list"),
        ("  last_s: [1]", "(last) must be a number, string or boolean"),
    ],
)
def test_bad_defaults(defaults: str, fragment: str) -> None:
    found = feature_problems(
        """\
        - {name: n, agg: count, windows: [1h]}
        - {name: lk, agg: last_k, field: x, k: 2, windows: [1h]}
        - {name: last_s, agg: last, field: x, windows: [1h]}
        """,
        f"defaults:\n{defaults}\n",
    )
    only(found, 13, fragment)


def test_defaults_suggest_the_closest_name() -> None:
    found = feature_problems(
        "- {name: orders, agg: count, windows: [1h]}\n", "defaults:\n  ordrs: 0\n"
    )
    only(found, 11, "did you mean 'orders'?")


def test_default_for_an_invalid_feature_is_not_reported_twice() -> None:
    found = feature_problems("- {name: n, agg: nope, windows: [1h]}\n", "defaults:\n  n: 0\n")
    only(found, 9, "unknown aggregation 'nope'")


# ------------------------------------------------------------------ all at once, files


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    found = problems("""\
        version: 3
        name: orders
        source:
          topic: orders
          key: user_id
          format: xml
        lateness: 5
        features:
          - name: a
            agg: summ
            windows: [1h]
          - name: b
            agg: percentile
            field: amount
            q: 0.5
            windows: [5m, 300s]
          - name: c
            agg: count
            where: "x >"
            windows: [1x]
          - name: b
            agg: last_k
            field: amount
            windows: [{size: 1h, type: hopping}]
        defaults:
          zzz: 1
        oops: 1
    """)
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)
    assert lines == [1, 6, 7, 10, 16, 19, 20, 21, 21, 24, 26, 27]
    assert "duplicate feature name 'b' (first at line 12)" in found[8]
    assert "'b__5m' is produced twice (also at line 16)" in found[4]
    assert all(p.startswith("t.yaml:") for p in found)
    assert all("\n" not in p for p in found)


def test_error_message_is_one_line_per_problem() -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text("name: t\nversion: 2\n", "x.yaml")
    assert isinstance(info.value, StreamfeatError)
    assert str(info.value) == "\n".join(info.value.problems)
    assert len(info.value.problems) == 3


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "the file is empty"),
        ("# only a comment\n", 1, "the file is empty"),
        ("name: t\nsource: {topic: o\n", 3, "YAML syntax error"),
        ("name: t\n  bad: indent\n", 2, "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
        ("- 1\n- 2\n", 1, "the topology must be a mapping"),
        (
            "name: !!python/object:os.system x\nsource: {topic: o, key: k}\n"
            "features: [{name: n, agg: count, windows: [1h]}]\n",
            1,
            "unsupported YAML tag",
        ),
    ],
)
def test_unparsable_files(text: str, line: int, fragment: str) -> None:
    found = problems(text)
    assert found[0].startswith(f"t.yaml:{line}: "), found
    assert fragment in found[0]


def test_load_topology_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsource: {topic: o, key: k}\n" + ONE_FEATURE.replace("count", "x"))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert info.value.problems[0].startswith(f"{path}:3: ")


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(tmp_path / "nope.yaml")
    assert info.value.problems[0].startswith(f"{tmp_path / 'nope.yaml'}:1: cannot read")


def test_definitions_are_frozen() -> None:
    topology = load("- {name: n, agg: count, windows: [1h]}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1ms", 1), ("90s", 90_000), ("5m", 300_000), ("2h", 7_200_000), ("7d", 604_800_000)],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5", "m", "1.5s", "5 m", "-1s", "1w", None, 5])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="integer and a unit"):
        parse_duration(text)


def test_durations_are_bounded_so_time_arithmetic_cannot_overflow() -> None:
    assert parse_duration("365000d") == MAX_DURATION_MS
    with pytest.raises(ValueError, match="longer than the longest streamfeat accepts"):
        parse_duration("365001d")
    # the largest event time plus a few of the longest durations stays far below int64
    assert MAX_EVENT_TIME_MS + 4 * MAX_DURATION_MS < 2**49
