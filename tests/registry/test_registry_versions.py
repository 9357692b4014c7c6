"""Versions of a topology as the registry records them (pure): digests, the difference of
two versions by the worker's field rule, and keys that no two topologies share."""

from __future__ import annotations

import itertools

import pytest

from streamfeat.errors import ConfigError
from streamfeat.pipeline.evolution import FieldStatus, field_changes
from streamfeat.registry import (
    READ_SET,
    TOPOLOGY_SET,
    catalog_key,
    change_summary,
    definition_digest,
    diff_versions,
    document_digest,
    usage_key,
    version_document,
)
from streamfeat.registry.shared import Deployment, TopologyHistory
from streamfeat.sinks.redis import partial_key
from streamfeat.topology import load_topology_text

V1 = """\
name: pay
owner: risk@example.com
entity: user
source: {topic: payments, key: user_id, timestamp: ts}
features:
  - name: payments
    agg: count
    windows: [1h, 1d]
  - name: amount_sum
    agg: sum
    field: amount
    windows: [1h]
  - name: amount_max
    agg: max
    field: amount
    windows: [1d]
"""


def _doc(text: str, path: str = "pay.yaml") -> dict:
    return version_document(load_topology_text(text, path))


def test_the_digest_ignores_where_the_file_was_and_its_layout() -> None:
    a = _doc(V1, "/srv/a/pay.yaml")
    b = _doc("# a comment moves every line\n" + V1, "/home/b/pay.yaml")
    assert a["features"][0]["file"] != b["features"][0]["file"]
    assert document_digest(a) == document_digest(b)
    assert a["topology"]["definition"] == b["topology"]["definition"]


def test_metadata_makes_a_new_version_of_the_same_definition() -> None:
    a, b = _doc(V1), _doc(V1.replace("risk@example.com", "fraud@example.com"))
    assert document_digest(a) != document_digest(b)
    assert a["topology"]["definition"] == b["topology"]["definition"]
    diff = diff_versions(a, b)
    assert diff["settings"] == {"owner": ["risk@example.com", "fraud@example.com"]}
    assert all(r["status"] == "unchanged" and not r["changed"] for r in diff["fields"])
    assert change_summary(diff) == "owner changed"


def test_what_determines_values_changes_the_definition() -> None:
    base = definition_digest(load_topology_text(V1))
    for old, new in (("timestamp: ts", "timestamp: at"), ("key: user_id", "key: uid"),
                     ("windows: [1h]", "windows: [2h]"),
                     ("entity: user", "entity: user\nlateness: 1m"),
                     ("entity: user", "entity: user\ndefaults: {payments: 0}")):
        assert definition_digest(load_topology_text(V1.replace(old, new, 1))) != base, new
    # the owner, a description, tags and models do not
    same = V1.replace("entity: user", "entity: user\ndescription: x\nmodels: [m]")
    assert definition_digest(load_topology_text(same)) == base


def test_diff_uses_the_worker_rule_and_names_what_changed() -> None:
    v2 = (V1.replace("    field: amount\n    windows: [1h]",
                     "    field: amount\n    where: \"status == 'completed'\"\n"
                     "    windows: [1h]")
          .replace("  - name: amount_max\n", "  - name: merchants\n    agg: count_distinct\n"
                   "    field: merchant_id\n    windows: [1d]\n    tags: [reach]\n"
                   "  - name: amount_max\n")
          .replace("entity: user", "entity: user\nmodels: [fraud-v3]"))
    v3 = (v2.replace("name: amount_sum", "name: spend_completed")
          .replace("  - name: amount_max\n    agg: max\n    field: amount\n    windows: [1d]\n",
                   ""))
    d12 = diff_versions(_doc(V1), _doc(v2))
    rows = {r["field"]: r for r in d12["fields"]}
    assert rows["amount_sum__1h"]["status"] == "redefined"
    assert rows["amount_sum__1h"]["changed"] == {"where": [None, "status == 'completed'"],
                                                 "models": [[], ["fraud-v3"]]}
    assert rows["merchants__1d"]["status"] == "added" and rows["merchants__1d"]["before"] is None
    assert rows["payments__1h"]["status"] == "unchanged"
    assert rows["payments__1h"]["changed"] == {"models": [[], ["fraud-v3"]]}  # declared now
    assert d12["settings"] == {"models": [[], ["fraud-v3"]]}
    assert change_summary(d12) == "1 redefined, 1 added; models, metadata of 3 fields changed"

    d23 = diff_versions(_doc(v2), _doc(v3))
    rows = {r["field"]: r for r in d23["fields"]}
    renamed = rows["spend_completed__1h"]
    assert (renamed["status"], renamed["was"]) == ("renamed", "amount_sum__1h")
    assert renamed["before"] == renamed["after"]
    assert renamed["changed"] == {"feature": ["amount_sum", "spend_completed"]}
    assert rows["amount_max__1d"]["status"] == "removed"
    assert rows["amount_max__1d"]["after"] is None
    assert change_summary(d23) == "1 renamed, 1 removed"

    d13 = diff_versions(_doc(V1), _doc(v3))  # the where changed too: no longer a rename
    statuses = {r["field"]: r["status"] for r in d13["fields"]}
    assert statuses == {"payments__1h": "unchanged", "payments__1d": "unchanged",
                        "spend_completed__1h": "added", "merchants__1d": "added",
                        "amount_sum__1h": "removed", "amount_max__1d": "removed"}


def test_field_changes_is_the_rule_compare_applies() -> None:
    changes = field_changes({"a": "h1", "b": "h2", "c": "h3"},
                            {"a": "h1", "b": "hX", "d": "h3", "e": "h4"}, recomputed={"e"})
    got = [(c.name, c.status, c.recompute, c.was) for c in changes]
    assert got == [("a", FieldStatus.UNCHANGED, False, None),
                   ("b", FieldStatus.REDEFINED, False, None),
                   ("d", FieldStatus.RENAMED, False, "c"),
                   ("e", FieldStatus.ADDED, True, None)]
    gone = field_changes({"a": "h1", "z": "h9"}, {"a": "h1"})
    assert [(c.name, c.status) for c in gone] == [("a", FieldStatus.UNCHANGED),
                                                 ("z", FieldStatus.REMOVED)]


def test_no_two_topologies_share_a_registry_key() -> None:
    # Names a topology may take that look like the registry's own words.
    names = ["registry", "usage", "partial", "_registry", "topologies", "read", "a", "a-b",
             "a_registry", "sfmeta", "sf"]
    valid = [n for n in names if n[0].isalpha()]  # [A-Za-z][A-Za-z0-9_-]*: never "_..."
    keys = [(n, f(n)) for n in valid for f in (catalog_key, usage_key, partial_key)]
    texts = [k for _n, k in keys]
    assert len(set(texts)) == len(texts)
    assert TOPOLOGY_SET not in texts and READ_SET not in texts
    for (_a, ka), (_b, kb) in itertools.combinations(keys, 2):
        assert not ka.startswith("sf:") and not kb.startswith("sf:")  # never a feature key


def test_a_version_is_named_by_number_digest_prefix_or_current_even_an_all_digit_prefix() -> None:
    """A digest prefix can be all digits ("492889"): when no version has that number it is
    read as a prefix, not refused (a CI run drew such a digest)."""
    def deployment(n: int, digest: str) -> Deployment:
        return Deployment("pay", n, digest, {}, 0, 0, 1, 0, "h")

    history = TopologyHistory("pay", [deployment(1, "4b77f15cab9d"),
                                      deployment(2, "4928892675fc"),
                                      deployment(3, "49281e163149")], current=2)
    assert history.version("2").version == 2
    assert history.version("v3").version == 3
    assert history.version("492889").version == 2
    assert history.version("4b77").version == 1
    assert history.version("current").version == 2
    assert history.version("3").version == 3          # a number wins over a digest prefix
    with pytest.raises(ConfigError, match="is not a version"):
        history.version("9")
    with pytest.raises(ConfigError, match="names several"):
        history.version("4928")  # not a number of any version, a prefix of two digests


def test_a_short_number_that_is_no_version_is_refused_not_read_as_a_digest_prefix() -> None:
    """A CI run drew a digest starting "9": ``--diff pay 1 9`` must still be refused, so a
    prefix needs at least MIN_DIGEST_PREFIX characters."""
    def deployment(n: int, digest: str) -> Deployment:
        return Deployment("pay", n, digest, {}, 0, 0, 1, 0, "h")

    history = TopologyHistory("pay", [deployment(1, "01c19679e774"),
                                      deployment(2, "937f474f129b")], current=2)
    for ref in ("9", "93", "937", "v9"):
        with pytest.raises(ConfigError, match="is not a version") as refused:
            history.version(ref)
        assert "at least 4 characters" in str(refused.value)
    assert history.version("937f").version == 2
    assert history.version("2").version == 2
