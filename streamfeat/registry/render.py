"""How ``streamfeat registry`` shows its entries: a table for people (rich), one JSON
document for tools (``--json``)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streamfeat.topology import format_duration

__all__ = ["render_json", "render_table"]

_UNWRAPPED = 1_000
"""The width of a table not shown on a terminal: wide enough that no cell wraps."""


def render_json(topologies: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]],
                file: TextIO) -> None:
    """``{"topologies": [...], "features": [...]}``, indented, on ``file``."""
    json.dump({"topologies": list(topologies), "features": list(features)}, file, indent=2)
    file.write("\n")


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
    return ", ".join(
        f"p{p}: {datetime.fromtimestamp(ms / 1000, tz=UTC).strftime('%Y-%m-%d %H:%M:%SZ')}"
        for p, ms in sorted(marks.items(), key=lambda kv: int(kv[0])))


def render_table(topologies: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]],
                 file: TextIO) -> None:
    """One table per topology, a row per Redis field, on ``file``: on a terminal as wide as
    it is, with colours; elsewhere (a pipe, a file) at the table's own width, a row a line."""
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # rendered unwrapped, without the padding of its width
        text = io.StringIO()
        _tables(Console(file=text, highlight=False, soft_wrap=False, width=_UNWRAPPED),
                topologies, features)
        file.writelines(line.rstrip() + "\n" for line in text.getvalue().splitlines())
        return
    _tables(console, topologies, features)


def _tables(console: Console, topologies: Sequence[dict[str, Any]],
            features: Sequence[dict[str, Any]]) -> None:
    for t in topologies:
        rows = [e for e in features if e["topology"] == t["topology"]]
        if not rows:
            continue
        about = [f"owner {t['owner'] or '-'}", f"entity {t['entity'] or '-'}",
                 f"source {t['source']} ({t['format']})", t["path"]]
        title = f"[bold]{escape(t['topology'])}[/bold]  {escape(t['file'])}"
        if t["description"]:
            title += f"\n{escape(t['description'])}"
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
        if any("partial_since_ms" in e for e in rows):
            columns.append(("Partial since", False))
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
                    "Partial since": _since(e.get("partial_since_ms", {}))}
            table.add_row(*(Text(cell[name]) for name, _ in columns))  # never read as markup
        console.print(table)
