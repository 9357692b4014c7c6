"""The topology's ``models:`` key (issue #17): declared model dependencies at the top level
and per feature, checked with file:line, never part of a feature-window's version."""

from __future__ import annotations

import pytest

from streamfeat.errors import TopologyError
from streamfeat.registry import feature_entries, version_document
from streamfeat.registry.versions import definition_digest, document_digest
from streamfeat.topology import load_topology_text

TOPOLOGY = """\
name: shop
owner: risk@example.com
models: [fraud-v3, "risk/limits:2"]
source: {topic: shop, key: user_id, timestamp: ts}
features:
  - name: spend
    agg: sum
    field: amount
    windows: [1h, 1d]
    models: [churn_v1, fraud-v3]
  - name: visits
    agg: count
    windows: [1h]
"""


def test_models_are_declared_per_topology_and_per_feature() -> None:
    t = load_topology_text(TOPOLOGY, "shop.yaml")
    spend, visits = t.features
    assert t.models == ("fraud-v3", "risk/limits:2")
    assert spend.models == ("churn_v1", "fraud-v3") and visits.models == ()
    # the topology's first, then the feature's own, each once
    assert t.models_of(spend) == ("fraud-v3", "risk/limits:2", "churn_v1")
    assert t.models_of(visits) == ("fraud-v3", "risk/limits:2")
    models = {e["field"]: e["models"] for e in feature_entries([t])}
    assert models == {"spend__1h": ["fraud-v3", "risk/limits:2", "churn_v1"],
                      "spend__1d": ["fraud-v3", "risk/limits:2", "churn_v1"],
                      "visits__1h": ["fraud-v3", "risk/limits:2"]}


def test_models_are_not_part_of_any_state() -> None:
    declared = load_topology_text(TOPOLOGY, "shop.yaml")
    bare = load_topology_text(
        TOPOLOGY.replace('models: [fraud-v3, "risk/limits:2"]\n', "").replace(
            "    models: [churn_v1, fraud-v3]\n", ""), "shop.yaml")
    assert bare.models == () and bare.features[0].models == ()
    for a, b in zip(declared.features, bare.features, strict=True):
        assert [a.state_hash(w) for w in a.windows] == [b.state_hash(w) for w in b.windows]
    assert definition_digest(declared) == definition_digest(bare)  # the same values served
    # ... but another version of the topology in the registry: who reads it changed
    assert document_digest(version_document(declared)) != \
        document_digest(version_document(bare))


@pytest.mark.parametrize(("snippet", "line", "reason"), [
    ("models: fraud\n", 2, "the topology: models must be a list of the names of the models"),
    ("models: [fraud, fraud]\n", 2, "the topology: model 'fraud' appears twice; keep one"),
    ("models: ['has space']\n", 2, "model 'has space' must be a name matching"),
    ("models: [7]\n", 2, "model 7 must be a name matching"),
    ("models: ['-lead']\n", 2, "model '-lead' must be a name matching"),
    ("models: [a|b]\n", 2, "model 'a|b' must be a name matching"),
    (f"models: [{'m' * 201}]\n", 2, "at most 200 characters"),
    ("model: [fraud]\n", 2, "unknown key 'model' in the topology; did you mean 'models'?"),
])
def test_bad_topology_models_name_the_line(snippet: str, line: int, reason: str) -> None:
    text = ("name: shop\n" + snippet + "source: {topic: shop, key: user_id}\nfeatures:\n"
            "  - name: visits\n    agg: count\n    windows: [1h]\n")
    with pytest.raises(TopologyError) as error:
        load_topology_text(text, "shop.yaml")
    assert any(p.startswith(f"shop.yaml:{line}: ") and reason in p
               for p in error.value.problems), error.value.problems


@pytest.mark.parametrize(("snippet", "reason"), [
    ("    models: {fraud: 1}\n", "feature 'other': models must be a list"),
    ("    models: [ok, ok]\n", "feature 'other': model 'ok' appears twice"),
    ("    models: [ok, 'not ok']\n", "feature 'other': model 'not ok' must be a name"),
])
def test_bad_feature_models_name_the_line(snippet: str, reason: str) -> None:
    text = ("name: shop\nsource: {topic: shop, key: user_id}\nfeatures:\n"
            "  - name: visits\n    agg: count\n    windows: [1h]\n  - name: other\n"
            + snippet + "    agg: count\n    windows: [1h]\n")
    with pytest.raises(TopologyError) as error:
        load_topology_text(text, "shop.yaml")
    assert any(p.startswith("shop.yaml:8: ") and reason in p
               for p in error.value.problems), error.value.problems
