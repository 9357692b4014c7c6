"""How ``streamfeat registry`` shows its answers: tables for people (rich), one JSON
document for tools (``--json``).

Tables on a terminal are as wide as it is, with colours; elsewhere (a pipe, a file) at their
own width, a row a line, without trailing spaces. User text is never read as markup."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streamfeat.topology import format_duration

__all__ = [
    "render_diff",
    "render_history",
    "render_json",
    "render_lineage",
    "render_models",
    "render_table",
]

_UNWRAPPED = 1_000
"""The width of a table not shown on a terminal: wide enough that no cell wraps."""


def render_json(topologies: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]],
                file: TextIO, **more: Any) -> None:
    """``{"topologies": [...], "features": [...]}`` and the ``more`` keys (``models``),
    indented, on ``file``."""
    json.dump({"topologies": list(topologies), "features": list(features), **more}, file,
              indent=2)
    file.write("\n")


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print(file: TextIO, draw: Callable[[Console], None]) -> None:
    """Run ``draw`` on a console writing to ``file`` (see the module docstring)."""
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # rendered unwrapped, without the padding of its width
        text = io.StringIO()
        draw(Console(file=text, highlight=False, soft_wrap=False, width=_UNWRAPPED))
        file.writelines(line.rstrip() + "\n" for line in text.getvalue().splitlines())
        return
    draw(console)


def _table(title: str, columns: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]],
           caption: str | None = None) -> Table:
    """A table of plain-text cells; ``columns``: (name, kept whole)."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                  expand=False)
    for name, whole in columns:
        table.add_column(name, no_wrap=whole, overflow="ellipsis" if whole else "fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _agg(entry: dict[str, Any]) -> str:
    args = [a for a in (entry["input"],) if a]
    if entry.get("q") is not None:
        args.append(f"q={entry['q']}")
    if entry.get("k") is not None:
        args.append(f"k={entry['k']}")
    return f"{entry['agg']}({', '.join(args)})" if args else str(entry["agg"])


def _window(window: dict[str, Any]) -> str:
    kind = str(window["kind"])
    size = window["size_ms"]
    if kind == "lifetime" or size is None:
        return kind
    text = f"{kind} {format_duration(size)}"
    if kind == "session":
        return f"session, gap {format_duration(size)}"
    hop = window["hop_ms"]
    if kind == "sliding":
        return text + (" exact" if window["exact"] else f", hop {format_duration(hop)}")
    if kind == "hopping":
        return f"{text}, step {format_duration(hop)}"
    return text + (", final" if window["emit_final"] else "")


def _since(marks: dict[str, int]) -> str:
    if not marks:
        return "-"
    return ", ".join(f"p{p}: {_when(ms)}"
                     for p, ms in sorted(marks.items(), key=lambda kv: int(kv[0])))


def render_table(topologies: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]],
                 file: TextIO, models: Sequence[Mapping[str, Any]] | None = None) -> None:
    """One table per topology, a row per Redis field, on ``file``. ``models``: the model
    rows (:func:`~streamfeat.registry.query.model_rows`) whose names the Models column
    shows; ``None``: the models the entries declare."""
    reading: dict[tuple[str, str], list[str]] = {}
    if models is None:
        for e in features:
            reading[(e["topology"], e["field"])] = list(e.get("models", []))
    else:
        for r in models:
            reading.setdefault((r["topology"], r["field"]), []).append(r["model"])
    _print(file, lambda console: _tables(console, topologies, features, reading))


def _deployed(t: Mapping[str, Any]) -> str:
    """A catalog entry's version line (empty for a topology file's entry)."""
    if "version" not in t:
        return ""
    return (f"version {t['version']} of {t['versions']} ({t['digest']}, definition "
            f"{t['definition']}): first started {_when(t['first_deployed_ms'])}, last "
            f"{_when(t['last_deployed_ms'])} on {t['host'] or '-'}, {t['starts']} "
            f"start{'s' if t['starts'] != 1 else ''}, generation {t['generation']}")


def _tables(console: Console, topologies: Sequence[dict[str, Any]],
            features: Sequence[dict[str, Any]],
            reading: Mapping[tuple[str, str], list[str]]) -> None:
    for t in topologies:
        rows = [e for e in features if e["topology"] == t["topology"]]
        if not rows:
            continue
        about = [f"owner {t['owner'] or '-'}", f"entity {t['entity'] or '-'}",
                 f"source {t['source']} ({t['format']})", t["path"]]
        title = f"[bold]{escape(t['topology'])}[/bold]  {escape(t['file'])}"
        if t["description"]:
            title += f"\n{escape(t['description'])}"
        if _deployed(t):
            title += f"\n{escape(_deployed(t))}"
        table = Table(title=title, caption=escape("; ".join(about)), title_justify="left",
                      caption_justify="left", expand=False)
        columns = [("Field", True), ("Aggregation", False)]
        if any(e["where"] for e in rows):
            columns.append(("Where", False))
        columns += [("Window", True), ("Version", True)]
        if any(e["description"] for e in rows):
            columns.append(("Description", False))
        if any(e["tags"] for e in rows):
            columns.append(("Tags", False))
        if any(e.get("partial_since_ms") for e in rows):
            columns.append(("Partial since", False))
        if any(reading.get((e["topology"], e["field"])) for e in rows):
            columns.append(("Models", False))
        for name, whole in columns:  # names and versions whole; the prose wraps
            table.add_column(name, no_wrap=whole, overflow="ellipsis" if whole else "fold")
        previous = None
        for e in rows:
            first = e["feature"] != previous  # description and tags once per feature
            previous = e["feature"]
            cell = {"Field": e["field"], "Aggregation": _agg(e), "Where": e["where"] or "",
                    "Window": _window(e["window"]), "Version": e["version"],
                    "Description": e["description"] if first else "",
                    "Tags": ", ".join(e["tags"]) if first else "",
                    "Partial since": _since(e.get("partial_since_ms", {})),
                    "Models": ", ".join(reading.get((e["topology"], e["field"]), []))}
            table.add_row(*(Text(cell[name]) for name, _ in columns))  # never read as markup
        console.print(table)


def render_models(rows: Sequence[Mapping[str, Any]], file: TextIO, title: str) -> None:
    """The models reading feature-windows, a row per (model, topology, field): declared in
    the topology, reads counted by the readers and when last seen."""
    cells = [[r["model"], r["topology"], r["field"] if r["feature"] is not None
              else f"{r['field']} (not in the version shown)",
              "yes" if r["declared"] else "no", f"{r['reads']:,}" if r["reads"] else "-",
              _when(r["last_seen_ms"])] for r in rows]
    columns = [("Model", True), ("Topology", True), ("Field", True), ("Declared", True),
               ("Reads", True), ("Last seen", True)]
    _print(file, lambda console: console.print(_table(
        title, columns, cells,
        None if rows else "no model declares or was seen reading these feature-windows")))


def render_history(history: Mapping[str, Any], file: TextIO) -> None:
    """A topology's versions (:func:`~streamfeat.registry.query` JSON form, see
    ``cli_registry``): number, digests, first and last start, starts, generation, host,
    fields, and what changed from the version before."""
    cells = [[f"{v['version']}{' (current)' if v['current'] else ''}", v["digest"],
              v["definition"], _when(v["first_deployed_ms"]), _when(v["last_deployed_ms"]),
              str(v["starts"]), str(v["generation"]), v["host"] or "-", str(len(v["fields"])),
              v["changes"]] for v in history["versions"]]
    columns = [("Version", True), ("Digest", True), ("Definition", True),
               ("First started", True), ("Last started", True), ("Starts", True),
               ("Generation", True), ("Host", True), ("Fields", True), ("Changes", False)]
    title = f"[bold]{escape(history['topology'])}[/bold]  versions"
    _print(file, lambda console: console.print(_table(title, columns, cells)))


def _value(key: str, value: Any) -> str:
    if value is None or value == [] or value == "":
        return "-"
    if key == "window" and isinstance(value, dict):
        return _window(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _setting(key: str, old: Any, new: Any) -> str:
    """``key: old -> new``; for two mappings (``defaults``), only their keys that differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        return f"{key}: " + ", ".join(
            f"{k} {_value(k, old.get(k))} -> {_value(k, new.get(k))}" for k in keys)
    return f"{key}: {_value(key, old)} -> {_value(key, new)}"


def render_diff(diff: Mapping[str, Any], file: TextIO) -> None:
    """What changed between two versions of a topology: a row per feature-window that is
    not unchanged (or whose description, tags or models changed), then the settings."""
    a, b = diff["from"], diff["to"]
    title = (f"[bold]{escape(diff['topology'])}[/bold]  version {a['version']} ({a['digest']}) "
             f"-> version {b['version']} ({b['digest']})")
    cells = []
    for row in diff["fields"]:
        if row["status"] == "unchanged" and not row["changed"]:
            continue
        status = row["status"] + (f" (was {row['was']})" if row["was"] else "")
        what = "; ".join(f"{k}: {_value(k, old)} -> {_value(k, new)}"
                         for k, (old, new) in row["changed"].items() if k != "feature")
        cells.append([row["field"], status, row["before"] or "-", row["after"] or "-",
                      what or "-"])
    settings = [_setting(k, old, new) for k, (old, new) in diff["settings"].items()]
    unchanged = sum(1 for r in diff["fields"] if r["status"] == "unchanged" and not r["changed"])
    caption = "; ".join([f"{unchanged} feature-window(s) unchanged", *settings])
    columns = [("Field", True), ("Status", True), ("Before", True), ("After", True),
               ("What changed", False)]
    _print(file, lambda console: console.print(_table(title, columns, cells, caption)))


def render_lineage(doc: Mapping[str, Any], file: TextIO) -> None:
    """A training set's lineage (``registry --lineage``): where its rows come from, each
    column's definition and, given the shared catalog, how it stands in the versions
    deployed and which models read it."""
    lin = doc["lineage"]
    snaps = lin.get("snapshots", {})
    spine = lin.get("spine", {})
    ts = snaps.get("kafka_ts") or {}
    parts = ", ".join(f"p{p} offsets {r['first_offset']}-{r['last_offset']}"
                      for p, r in snaps.get("partitions", {}).items())
    facts = [
        ("file", doc["file"]),
        ("topology", f"{lin.get('topology')} (owner {lin.get('owner') or '-'}, entity "
                     f"{lin.get('entity') or '-'})"),
        ("version", f"definition {lin.get('definition')}, digest {lin.get('digest')}"),
        ("source", f"{lin.get('source')}; snapshots of {snaps.get('topic')} at "
                   f"{snaps.get('location')}"),
        ("snapshots", f"{snaps.get('files', 0)} files, dates {snaps.get('first_date') or '-'} "
                      f"to {snaps.get('last_date') or '-'} (asked: {snaps.get('from') or '-'} "
                      f"to {snaps.get('to') or '-'}); {parts or 'no partition'}"),
        ("kafka time", f"{_when(ts.get('first_ms'))} to {_when(ts.get('last_ms'))}"),
        ("rows", f"{spine.get('rows')} spine rows ({spine.get('entity_column')}, "
                 f"{spine.get('timestamp_column')}), times {_when(spine.get('first_ms'))} to "
                 f"{_when(spine.get('last_ms'))}; {lin.get('mode')}"),
        ("written", f"{_when(lin.get('created_ms'))} by streamfeat {lin.get('streamfeat')}"),
    ]
    served = doc.get("served_by")
    if served is not None:
        versions = ", ".join(map(str, served["versions"])) or "none recorded"
        facts.append(("deployed", f"versions serving these definitions: {versions}; current "
                                  f"version {served['current']}"))
    models: dict[str, list[str]] = {}
    for r in doc.get("models", []):
        models.setdefault(r["field"], []).append(r["model"])
    cells = [[field, version, "-" if served is None else served["fields"].get(field, "-"),
              ", ".join(models.get(field, [])) or "-"]
             for field, version in lin.get("fields", {}).items()]
    columns = [("Field", True), ("Version", True), ("In the current version", True),
               ("Models", False)]

    def draw(console: Console) -> None:
        facts_table = Table(show_header=False, box=None, title="[bold]training set lineage[/bold]",
                            title_justify="left")
        facts_table.add_column(no_wrap=True)
        facts_table.add_column(overflow="fold")
        for name, value in facts:
            facts_table.add_row(Text(name), Text(str(value)))
        console.print(facts_table)
        console.print(_table("columns", columns, cells))

    _print(file, draw)
