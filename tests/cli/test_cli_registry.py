"""Features carry a description and tags; `registry` shows them in a table or one JSON
document; unknown names (registry --feature, get --features, get NAME) exit 2 listing what
exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamfeat.cli import main
from streamfeat.errors import TopologyError
from streamfeat.topology import load_topology_text

ROOT = Path(__file__).resolve().parents[2]
ORDERS = str(ROOT / "topologies" / "orders.yaml")

#: The keys every registry entry had before the table (JSON lines): kept for their readers.
OLD_KEYS = {"field", "topology", "owner", "entity", "source", "agg", "input", "where",
            "window", "version", "file", "consumes", "path"}

TOPOLOGY = """\
name: shop
owner: team@example.com
entity: user
description: Shop activity
source: {topic: shop, key: user_id, timestamp: ts}
features:
  - name: spend
    agg: sum
    field: amount
    windows: [1h, 1d]
    description: "Money spent [EUR], any status"
    tags: [spend, "pii:none"]
  - name: visits
    agg: count
    windows: [1h]
"""


def test_description_and_tags_are_loaded_and_not_part_of_the_state() -> None:
    t = load_topology_text(TOPOLOGY, "shop.yaml")
    spend = t.features[0]
    assert spend.description == "Money spent [EUR], any status"
    assert spend.tags == ("spend", "pii:none")
    bare = load_topology_text(TOPOLOGY.replace('    description: "Money spent [EUR], any '
                                               'status"\n', "").replace(
        '    tags: [spend, "pii:none"]\n', ""), "shop.yaml")
    assert bare.features[0].description == "" and bare.features[0].tags == ()
    for w in spend.windows:  # metadata: a new description recomputes nothing
        assert spend.state_hash(w) == bare.features[0].state_hash(w)


@pytest.mark.parametrize(("snippet", "line", "reason"), [
    ("    description: 12\n", 8, "description must be a non-empty string"),
    ("    description: ''\n", 8, "description must be a non-empty string"),
    ("    tags: fraud\n", 8, "tags must be a list of names"),
    ("    tags: [fraud, fraud]\n", 8, "tag 'fraud' appears twice"),
    ("    tags: [ok, 'has space']\n", 8, "tag 'has space' must be a name"),
    ("    tags: [7]\n", 8, "tag 7 must be a name"),
    ("    labels: [x]\n", 8, "unknown key 'labels' in a feature"),
])
def test_bad_description_or_tags_name_the_line(snippet: str, line: int, reason: str) -> None:
    text = ("name: shop\nsource: {topic: shop, key: user_id}\nfeatures:\n"
            "  - name: visits\n    agg: count\n    windows: [1h]\n  - name: other\n"
            + snippet + "    agg: count\n    windows: [1h]\n")
    with pytest.raises(TopologyError) as error:
        load_topology_text(text, "shop.yaml")
    assert any(p.startswith(f"shop.yaml:{line}: ") and reason in p
               for p in error.value.problems), error.value.problems


def _shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_registry_table_shows_description_and_tags(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", str(_shop(tmp_path))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("shop  ") and lines[1].strip() == "Shop activity"
    header = next(line for line in lines if "Field" in line)
    for column in ("Field", "Aggregation", "Window", "Version", "Description", "Tags"):
        assert column in header
    row = next(line for line in lines if "spend__1h" in line)
    assert "sum(amount)" in row and "sliding 1h, hop 1m" in row
    assert "Money spent [EUR], any status" in row  # user text is never read as markup
    assert "spend, pii:none" in row
    second = next(line for line in lines if "spend__1d" in line)
    assert "Money spent" not in second  # once per feature
    assert "owner team@example.com; entity user; source shop (json)" in out


def test_registry_json_is_one_document_with_the_old_entry_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", str(_shop(tmp_path)), ORDERS, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["topology"] for t in doc["topologies"]] == ["shop", "orders"]
    entries = {e["field"]: e for e in doc["features"]}
    assert len(entries) == 3 + 23
    for e in entries.values():
        assert set(e) >= OLD_KEYS, set(e) ^ OLD_KEYS
        assert "partial_since_ms" not in e  # only with --redis
    spend = entries["spend__1h"]
    assert (spend["feature"], spend["agg"], spend["input"], spend["description"],
            spend["tags"]) == ("spend", "sum", "amount", "Money spent [EUR], any status",
                               ["spend", "pii:none"])
    assert spend["file"] == f"{tmp_path / 'shop.yaml'}:7"
    assert entries["visits__1h"]["description"] == "" and entries["visits__1h"]["tags"] == []


@pytest.mark.parametrize("name", ["spend", "spend__1d"])
def test_registry_one_feature_or_field(tmp_path: Path, name: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", str(_shop(tmp_path)), "--feature", name, "--json"]) == 0
    fields = [e["field"] for e in json.loads(capsys.readouterr().out)["features"]]
    assert fields == (["spend__1h", "spend__1d"] if name == "spend" else ["spend__1d"])


def test_registry_unknown_feature_exits_2_listing_the_known(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _shop(tmp_path)
    assert main(["registry", str(path), "--feature", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f"streamfeat: no feature 'nope' in {path}; known: spend, visits (or one field of a "
        "feature, e.g. spend__1h)")


def test_get_unknown_feature_exits_2_before_asking_redis(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _shop(tmp_path)
    # no Redis listens on port 1: the name is refused before any connection
    assert main(["get", str(path), "u1", "--features", "spend,nope,visits__1h,gone",
                 "--redis", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"streamfeat: no feature 'nope', 'gone' in {path}; known: spend, visits "
                   "(or one field of a feature, e.g. spend__1h)")


def test_get_finds_a_topology_by_name_or_lists_the_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tops"
    folder.mkdir()
    (folder / "a-file-named-otherwise.yaml").write_text(TOPOLOGY)
    (folder / "broken.yaml").write_text("name: [\n")
    assert main(["get", "shop", "u1", "--features", "nope", "--topologies-dir",
                 str(folder)]) == 2
    assert "no feature 'nope' in" in capsys.readouterr().err  # found it, by its name:
    monkeypatch.setenv("STREAMFEAT_TOPOLOGIES", str(folder))
    assert main(["get", "nosuch", "u1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"streamfeat: no topology named 'nosuch' in {folder}/ (known: shop; not "
                   "valid, so not searched: broken.yaml); give its YAML path, or "
                   "--topologies-dir DIR (env STREAMFEAT_TOPOLOGIES)")
