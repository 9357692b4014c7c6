"""Load a topology YAML file into a validated :class:`TopologyDef`.

Every problem of the file is collected and raised at once, as one
:class:`~streamfeat.errors.TopologyError` whose ``problems`` are lines of the
form ``file:line: reason; how to fix``. Line numbers come from the YAML node
tree (``yaml.compose`` with the safe loader), so they point at the offending
key or value.

Decisions the contract leaves open (documented here, enforced below):

- ``version`` is optional and defaults to 1; any other value is rejected.
- ``k`` is required for ``last_k`` and ``top_k`` (no silent default): it
  shapes both state and the served list. ``q`` is required for ``percentile``.
- ``field`` is rejected on ``count`` (it counts events; filter with ``where``).
- ``q``, ``k`` and ``exact_up_to`` are rejected on aggregations that ignore them.
- ``lateness`` may be ``0`` (default 0: no out-of-order delay accepted);
  every other duration must be > 0, except ``max_future``. ``ttl`` is optional (no expiry).
- Every duration is at most ``365000d`` (:data:`~.definitions.MAX_DURATION_MS`, about
  1000 years), so window arithmetic on event times cannot overflow.
- ``max_future`` (top level, default ``1h``, ``0`` allowed): how far an event time may be
  after its record's Kafka timestamp before the record is malformed (``future: ...``).
- A feature may carry ``description`` (a non-empty string) and ``tags`` (a list of distinct
  names, ``[A-Za-z0-9][A-Za-z0-9_.:/-]*``): metadata shown by ``streamfeat registry``,
  never part of the feature's state (changing them recomputes nothing).
- ``models`` (a list of distinct model names, ``[A-Za-z0-9][A-Za-z0-9_.:/-]*``, at most 200
  characters) at the top level (models reading every feature) and on a feature (models
  reading that one): the declared model dependencies ``streamfeat registry`` and ``plan``
  name; never part of any state.
- ``source.keyed_by_entity`` (default ``true``): whether the topic's records are keyed
  by the entity id; a YAML boolean (``true``/``false``), nothing else.
- A window dict's ``type`` defaults to ``sliding``. Keys that do not apply to
  the type (``hop`` on tumbling, ``gap`` on sliding, ...) are rejected.
- ``where`` is stored in canonical form (:func:`canonical_where`), so that
  reformatting it does not change the feature's state hash.
- ``defaults`` values must be numbers for numeric and counting aggregations,
  lists for ``last_k``/``top_k``, and any scalar for ``first``/``last``.
  A full field name (``orders__1h``) overrides its feature's default.
- A YAML mapping with the same key twice is an error (YAML would keep the last).
- ``source.format: avro`` needs ``source.schema`` (an ``.avsc`` file); ``protobuf`` needs
  ``source.message`` and one of ``source.descriptor`` (a descriptor set file) or
  ``source.module`` (a generated ``*_pb2`` module). Paths are relative to the topology
  file. The schema is read and checked here (:mod:`.schemas`) and kept in the definition.
  ``source.framing`` (``plain`` | ``confluent``, default ``plain``) applies to both;
  ``confluent`` needs ``source.schema_ids``, the registry ids of that schema (a record
  framed with another id is malformed: there is no registry client). The fields a
  topology reads (key, timestamp, aggregated and ``where`` fields) must be top-level
  fields of the schema's record or message. These keys are refused on json and msgpack.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streamfeat.errors import TopologyError
from streamfeat.topology import schemas
from streamfeat.topology.definitions import (
    DEFAULT_MAX_FUTURE_MS,
    DISTINCT_EXACT_UP_TO,
    MAX_DURATION_MS,
    MODEL_NAME_PATTERN,
    RESERVED_FIELDS,
    SECOND,
    TOP_K_EXACT_UP_TO,
    AggKind,
    FeatureDef,
    SchemaDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
    default_hop_ms,
    format_duration,
)
from streamfeat.topology.expressions import ExpressionError, canonical_where, fields_of

__all__ = ["load_topology", "load_topology_text", "parse_duration"]

_TOP_KEYS: Final = (
    "version", "name", "owner", "description", "source", "entity", "lateness", "max_future",
    "ttl", "freshness", "features", "defaults", "models",
)  # fmt: skip
_SOURCE_KEYS: Final = (
    "topic", "format", "key", "timestamp", "timestamp_unit", "keyed_by_entity",
    "schema", "descriptor", "module", "message", "framing", "schema_ids",
)  # fmt: skip
_SCHEMA_KEYS: Final = {
    "avro": ("schema", "framing", "schema_ids"),
    "protobuf": ("descriptor", "module", "message", "framing", "schema_ids"),
}
_FEATURE_KEYS: Final = (
    "name", "agg", "field", "windows", "where", "q", "k", "exact_up_to", "description", "tags",
    "models",
)  # fmt: skip
_WINDOW_KEYS: Final = ("size", "type", "hop", "step", "gap", "emit", "name")
_FORMATS: Final = ("json", "msgpack", "avro", "protobuf")
_FRAMINGS: Final = ("plain", "confluent")
_MAX_SCHEMA_ID: Final = 2**31 - 1  # Confluent's ids are positive 32-bit integers
_TIMESTAMP_UNITS: Final = ("ms", "s", "iso8601")
_EMITS: Final = ("current", "final")

_DURATION_RE: Final = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOPOLOGY_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_LABEL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
_MODEL_RE: Final = re.compile(f"^{MODEL_NAME_PATTERN}$")
_LIST_AGGS: Final = frozenset({AggKind.LAST_K, AggKind.TOP_K})
_SCALAR_AGGS: Final = frozenset({AggKind.FIRST, AggKind.LAST})
_WINDOW_ALLOWED: Final = {
    WindowKind.SLIDING: frozenset({"size", "type", "hop", "name"}),
    WindowKind.TUMBLING: frozenset({"size", "type", "emit", "name"}),
    WindowKind.HOPPING: frozenset({"size", "type", "step", "name"}),
    WindowKind.SESSION: frozenset({"type", "gap", "name"}),
    WindowKind.LIFETIME: frozenset({"type", "name"}),
}

_MISSING: Final = object()


def parse_duration(text: object) -> int:
    """Milliseconds of a duration such as ``90s`` or ``5m`` (integer + ``ms s m h d``).

    Raises ``ValueError`` naming the expected form when ``text`` is not one, or the limit
    when it is longer than ``365000d`` (:data:`~.definitions.MAX_DURATION_MS`).
    """
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"bad duration {text!r}; write an integer and a unit ms|s|m|h|d, e.g. 90s or 5m"
        )
    ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms > MAX_DURATION_MS:
        raise ValueError(
            f"duration {match.group(0)!r} is longer than the longest streamfeat accepts, "
            f"{format_duration(MAX_DURATION_MS)} (about 1000 years); use a shorter one "
            "(a lifetime window needs no size)"
        )
    return ms


def load_topology(path: str | Path) -> TopologyDef:
    """Read and validate the topology file at ``path``.

    Raises :class:`TopologyError` listing every problem as ``file:line: reason``
    (an unreadable file is one problem at line 1); fix them all and re-run
    ``streamfeat validate``.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(
            [
                f"{name}:1: cannot read the topology file ({exc}); "
                "check the path and that it is UTF-8 text"
            ]
        ) from exc
    return load_topology_text(text, name)


def load_topology_text(text: str, path: str = "<string>") -> TopologyDef:
    """Validate a topology given as YAML text; ``path`` names it in error messages.

    Raises :class:`TopologyError` listing every problem as ``path:line: reason``.
    """
    return _Loader(path).load(text)


def _suggest(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1)
    return f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[tuple[int, int, str]] = []
        self.constructor = yaml.SafeLoader("")
        self.declared: set[str] = set()  # feature names seen, valid or not
        self.window_lines: dict[int, list[int]] = {}  # feature line -> its windows' lines
        self.last_name: str | None = None  # the name the last feature() declared
        # The schema's top-level field names, what to call it, and source key lines.
        self.schema_fields: tuple[str, ...] | None = None
        self.schema_label = ""
        self.source_lines: dict[str, int] = {}

    # ------------------------------------------------------------ helpers

    def error(self, node: Node | int, reason: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.problems.append((line, len(self.problems), f"{self.path}:{line}: {reason}"))

    def scalar(self, node: Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            self.error(node, f"unsupported YAML tag {node.tag!r}; write a plain value")
            return _MISSING

    def mapping(
        self,
        node: Node,
        what: str,
        keys: tuple[str, ...],
        unknown: str = "",
        ignore: frozenset[str] = frozenset(),
    ) -> dict[str, Node]:
        """The key -> value nodes of a mapping, reporting unknown and repeated keys."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of key: value lines")
            return {}
        explicit = {id(k) for k, _ in node.value}
        self.constructor.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out: dict[str, Node] = {}
        merged: set[str] = set()
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.error(key_node, f"{what}: keys must be plain names; valid: {', '.join(keys)}")
                continue
            if key not in keys:
                if unknown:
                    if key.split("__")[0] not in ignore:
                        self.error(key_node, f"{what}: {key!r} {unknown}; {_suggest(key, keys)}")
                    continue
                self.error(key_node, f"unknown key {key!r} in {what}; {_suggest(key, keys)}")
                continue
            if key in out and not (key in merged and id(key_node) in explicit):
                self.error(key_node, f"key {key!r} appears twice in {what}; keep one")
                continue
            merged.discard(key)
            if id(key_node) not in explicit:
                merged.add(key)
            out[key] = value_node
        return out

    def string(self, node: Node, what: str) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else _MISSING
        if not isinstance(value, str) or not value.strip():
            self.error(node, f"{what} must be a non-empty string")
            return None
        return value

    def choice(self, node: Node, what: str, valid: tuple[str, ...]) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or value not in valid:
            self.error(node, f"{what} must be one of {' | '.join(valid)}, got {value!r}")
            return None
        return value

    def duration(self, node: Node, what: str, allow_zero: bool = False) -> int | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if allow_zero and value == 0 and not isinstance(value, bool):
            return 0
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.error(
                node,
                f"{what}: a duration needs a unit; write e.g. {value}s or "
                f"{value}ms (units ms|s|m|h|d)",
            )
            return None
        try:
            ms = parse_duration(value)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None
        if ms <= 0 and not allow_zero:
            self.error(node, f"{what} must be greater than zero; got {value!r}")
            return None
        return ms

    # ------------------------------------------------------------ the file

    def load(self, text: str) -> TopologyDef:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = int(mark.line) + 1 if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise TopologyError(
                [
                    f"{self.path}:{line}: YAML syntax error: {problem}; fix the "
                    "indentation or quoting there"
                ]
            ) from exc
        if root is None:
            raise TopologyError(
                [
                    f"{self.path}:1: the file is empty; a topology needs at least "
                    "name, source (topic, key) and features"
                ]
            )
        topology = self.topology(root)
        if self.problems or topology is None:
            self.problems.sort()
            raise TopologyError([message for _, _, message in self.problems])
        return topology

    def topology(self, root: Node) -> TopologyDef | None:
        top = self.mapping(root, "the topology", _TOP_KEYS)
        if not isinstance(root, MappingNode):
            return None
        for required in ("name", "source", "features"):
            if required not in top:
                self.error(root, f"missing required key {required!r} at the top level; add it")

        version = 1
        if "version" in top:
            value = self.scalar(top["version"]) if isinstance(top["version"], ScalarNode) else None
            if value != 1 or isinstance(value, bool):
                self.error(
                    top["version"],
                    f"unsupported version {value!r}; this streamfeat reads version: 1",
                )
        name = ""
        if "name" in top:
            got = self.string(top["name"], "name")
            if got is not None and not _TOPOLOGY_NAME_RE.match(got):
                self.error(
                    top["name"],
                    f"topology name {got!r} must match "
                    "[A-Za-z][A-Za-z0-9_-]* (it is part of every Redis key)",
                )
            name = got or ""
        texts: dict[str, str] = {}
        for key in ("owner", "description", "entity"):
            if key in top:
                texts[key] = self.string(top[key], key) or ""
        source = self.source(top["source"]) if "source" in top else None

        lateness_ms = 0
        if "lateness" in top:
            lateness_ms = self.duration(top["lateness"], "lateness", allow_zero=True) or 0
        max_future_ms = DEFAULT_MAX_FUTURE_MS
        if "max_future" in top:
            got_ms = self.duration(top["max_future"], "max_future", allow_zero=True)
            max_future_ms = DEFAULT_MAX_FUTURE_MS if got_ms is None else got_ms
        ttl_ms = self.duration(top["ttl"], "ttl") if "ttl" in top else None
        freshness_ms = SECOND
        if "freshness" in top:
            freshness_ms = self.duration(top["freshness"], "freshness") or SECOND

        features = self.features(top["features"]) if "features" in top else []
        self.check_fields(features)
        if source is not None:
            self.check_schema_fields(source, features)
        defaults = self.defaults(top["defaults"], features) if "defaults" in top else {}
        models = self.models(top["models"], "the topology") if "models" in top else ()

        if source is None or self.problems:
            return None
        return TopologyDef(
            name=name,
            source=source,
            features=tuple(features),
            entity=texts.get("entity", ""),
            owner=texts.get("owner", ""),
            description=texts.get("description", ""),
            version=version,
            lateness_ms=lateness_ms,
            max_future_ms=max_future_ms,
            ttl_ms=ttl_ms,
            freshness_ms=freshness_ms,
            defaults=defaults,
            path=self.path,
            models=models,
        )

    def source(self, node: Node) -> SourceDef | None:
        src = self.mapping(node, "source", _SOURCE_KEYS)
        if not isinstance(node, MappingNode):
            return None
        for required in ("topic", "key"):
            if required not in src:
                what = "the Kafka topic" if required == "topic" else "the entity id field"
                self.error(node, f"source: missing required key {required!r}; add it ({what})")
        topic = self.string(src["topic"], "source.topic") if "topic" in src else None
        key = self.string(src["key"], "source.key") if "key" in src else None
        fmt = self.choice(src["format"], "source.format", _FORMATS) if "format" in src else "json"
        ts = self.string(src["timestamp"], "source.timestamp") if "timestamp" in src else None
        unit = "ms"
        if "timestamp_unit" in src:
            unit = (
                self.choice(src["timestamp_unit"], "source.timestamp_unit", _TIMESTAMP_UNITS)
                or "ms"
            )
        keyed = True
        if "keyed_by_entity" in src:
            keyed_node = src["keyed_by_entity"]
            value = self.scalar(keyed_node) if isinstance(keyed_node, ScalarNode) else None
            if not isinstance(value, bool):
                self.error(
                    keyed_node,
                    "source.keyed_by_entity must be true or false (whether the topic's "
                    f"records are keyed by the entity id), got {value!r}",
                )
                return None
            keyed = value
        self.source_lines = {k: _line(v) for k, v in src.items()}
        schema = self.source_schema(node, src, fmt) if fmt is not None else None
        if topic is None or key is None or fmt is None:
            return None
        if fmt in _SCHEMA_KEYS and schema is None:
            return None
        return SourceDef(topic=topic, key=key, format=fmt, timestamp=ts, timestamp_unit=unit,
                         keyed_by_entity=keyed, schema=schema)

    # ------------------------------------------------------------ binary formats

    def source_schema(self, node: Node, src: dict[str, Node], fmt: str) -> SchemaDef | None:
        """The schema of an avro or protobuf source, read and checked (``None`` for json and
        msgpack, and when it has problems: they are reported)."""
        allowed = _SCHEMA_KEYS.get(fmt, ())
        for key in ("schema", "descriptor", "module", "message", "framing", "schema_ids"):
            if key in src and key not in allowed:
                where = ", ".join(f for f, keys in _SCHEMA_KEYS.items() if key in keys)
                self.error(src[key], f"source.{key} is only for format {where}, not {fmt}; "
                           "remove it, or set source.format")
        if fmt not in _SCHEMA_KEYS:
            return None
        framing = "plain"
        if "framing" in src:
            framing = self.choice(src["framing"], "source.framing", _FRAMINGS) or ""
        ids = self.schema_ids(node, src, framing)
        base = Path(self.path).parent
        content: bytes | None = None
        where = ""
        if fmt == "avro":
            if "schema" not in src:
                self.error(node, "source: format avro needs schema, the Avro schema file "
                           "(.avsc, relative to the topology file); add schema: FILE")
                return None
            file = self.string(src["schema"], "source.schema")
            if file is None:
                return None
            where = str(base / file)
            try:
                content, fields = schemas.read_avro(base / file)
            except schemas.SchemaProblem as exc:
                self.error(src["schema"], f"source.schema: {exc.reason}")
                return None
            message: str | None = ""
        else:
            message = self.string(src["message"], "source.message") if "message" in src else None
            if "message" not in src:
                self.error(node, "source: format protobuf needs message, the full name of each "
                           "record's message type; add e.g. message: shop.Order")
            given = [k for k in ("descriptor", "module") if k in src]
            if len(given) != 1:
                self.error(src[given[1]] if given else node,
                           "source: format protobuf needs one of descriptor (a descriptor set "
                           "file, protoc --include_imports --descriptor_set_out) or module (a "
                           f"generated *_pb2 module){'; keep one' if given else '; add one'}")
                return None
            key = given[0]
            value = self.string(src[key], f"source.{key}")
            if value is None or message is None:
                return None
            try:
                if key == "descriptor":
                    where = str(base / value)
                    content, fields = schemas.read_descriptor_set(base / value, message)
                else:
                    where = f"module:{value}"
                    content, fields = schemas.read_generated_module(value, base, message)
            except schemas.SchemaProblem as exc:
                at = src["message"] if exc.about == "message" else src[key]
                self.error(at, f"source.{'message' if exc.about == 'message' else key}: "
                           f"{exc.reason}")
                return None
        if not framing or ids is None or message is None:
            return None
        self.schema_fields = fields
        self.schema_label = (f"the record of {where}" if fmt == "avro"
                             else f"message {message} ({where})")
        return SchemaDef(path=where, content=content, message=message, framing=framing,
                         schema_ids=ids)

    def schema_ids(self, node: Node, src: dict[str, Node], framing: str) -> tuple[int, ...] | None:
        if "schema_ids" not in src:
            if framing == "confluent":
                self.error(node, "source: framing confluent needs schema_ids, the schema "
                           "registry ids of this schema (records framed with another id are "
                           "malformed); add e.g. schema_ids: [12]")
                return None
            return ()
        ids_node = src["schema_ids"]
        if framing != "confluent":
            self.error(ids_node, "source.schema_ids is only for framing: confluent; remove it, "
                       "or set source.framing: confluent")
            return None
        value = self.scalar(ids_node) if isinstance(ids_node, SequenceNode | ScalarNode) else None
        if isinstance(value, int):
            value = [value]
        if (not isinstance(value, list) or not value or len(set(value)) != len(value)
                or not all(isinstance(v, int) and not isinstance(v, bool)
                           and 0 <= v <= _MAX_SCHEMA_ID for v in value)):
            self.error(ids_node, "source.schema_ids must be a list of distinct schema registry "
                       f"ids (integers 0 .. {_MAX_SCHEMA_ID}), e.g. [12, 15]; got {value!r}")
            return None
        return tuple(value)

    def check_schema_fields(self, source: SourceDef, features: list[FeatureDef]) -> None:
        """Every field the topology reads is a top-level field of the schema's records: one
        that is not would be missing from every record."""
        fields = self.schema_fields
        if fields is None or source.schema is None:
            return
        known = set(fields)
        reads: list[tuple[str, int, str]] = [
            (source.key, self.source_lines.get("key", 1), "source.key")]
        if source.timestamp is not None:
            reads.append((source.timestamp, self.source_lines.get("timestamp", 1),
                          "source.timestamp"))
        for f in features:
            if f.field is not None:
                reads.append((f.field, f.line, f"feature {f.name!r}: field"))
            if f.where is not None:
                reads += [(n, f.line, f"feature {f.name!r}: where")
                          for n in sorted(fields_of(f.where))]
        for name, line, what in reads:
            if name not in known:
                self.error(line, f"{what} {name!r} is not a field of {self.schema_label}; "
                           f"{_suggest(name, fields)}")

    # ------------------------------------------------------------ features

    def features(self, node: Node) -> list[FeatureDef]:
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(node, "features must be a non-empty list of '- name: ...' entries")
            return []
        out: list[FeatureDef] = []
        seen: dict[str, int] = {}
        for item in node.value:
            self.last_name = None
            feature = self.feature(item)
            name = self.last_name
            if name is not None and name in seen:
                self.error(
                    item,
                    f"duplicate feature name {name!r} (first at line {seen[name]}); rename one",
                )
                continue
            if name is not None:
                seen[name] = _line(item)
            if feature is not None:
                out.append(feature)
        return out

    def feature(self, node: Node) -> FeatureDef | None:
        spec = self.mapping(node, "a feature", _FEATURE_KEYS)
        if not isinstance(node, MappingNode):
            return None
        ok = True
        for required in ("name", "agg", "windows"):
            if required not in spec:
                self.error(node, f"feature: missing required key {required!r}; add it")
                ok = False

        name = self.feature_name(spec["name"]) if "name" in spec else None
        if "name" in spec and isinstance(spec["name"], ScalarNode):
            self.last_name = str(spec["name"].value)
            self.declared.add(self.last_name)
        label = f"feature {name!r}" if name else "feature"
        agg: AggKind | None = None
        if "agg" in spec:
            value = self.scalar(spec["agg"]) if isinstance(spec["agg"], ScalarNode) else None
            valid = [a.value for a in AggKind]
            if isinstance(value, str) and value in valid:
                agg = AggKind(value)
            else:
                close = difflib.get_close_matches(str(value), valid, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.error(
                    spec["agg"],
                    f"{label}: unknown aggregation {value!r}; {hint}valid: {', '.join(valid)}",
                )
                ok = False

        field: str | None = None
        if "field" in spec:
            field = self.string(spec["field"], f"{label}: field")
            if agg is AggKind.COUNT and field is not None:
                self.error(
                    spec["field"],
                    f"{label}: count counts events and takes no field; "
                    'remove it (filter with where: "x != null" instead)',
                )
                ok = False
        elif agg is not None and agg.needs_field:
            self.error(
                node,
                f"{label}: aggregation {agg.value} needs a field; add "
                "field: <event field to aggregate>",
            )
            ok = False

        where: str | None = None
        if "where" in spec:
            where = self.where(spec["where"], label)
            ok = ok and where is not None

        q = k = exact_up_to = None
        if agg is not None:
            q = self.q(spec.get("q", _MISSING), node, agg, label)
            k = self.k(spec.get("k", _MISSING), node, agg, label)
            exact_up_to = self.exact_up_to(spec.get("exact_up_to", _MISSING), agg, label)
        description = ""
        if "description" in spec:
            description = self.string(spec["description"], f"{label}: description") or ""
        tags = self.tags(spec["tags"], label) if "tags" in spec else ()
        models = self.models(spec["models"], label) if "models" in spec else ()
        windows = self.windows(spec["windows"], label) if "windows" in spec else None
        if isinstance(spec.get("windows"), SequenceNode):
            self.window_lines[_line(node)] = [_line(item) for item in spec["windows"].value]

        if not ok or name is None or agg is None or windows is None:
            return None
        if agg is AggKind.PERCENTILE and q is None:
            return None
        if agg in _LIST_AGGS and k is None:
            return None
        return FeatureDef(
            name=name,
            agg=agg,
            windows=tuple(windows),
            field=field,
            where=where,
            q=q,
            k=k,
            exact_up_to=exact_up_to if exact_up_to is not None
            else TOP_K_EXACT_UP_TO if agg is AggKind.TOP_K else DISTINCT_EXACT_UP_TO,
            line=_line(node),
            description=description,
            tags=tags,
            models=models,
        )

    def tags(self, node: Node, label: str) -> tuple[str, ...]:
        """A feature's ``tags``: a list of distinct names (problems reported, then ``()``)."""
        if not isinstance(node, SequenceNode):
            self.error(node, f"{label}: tags must be a list of names, e.g. tags: [fraud, pii]")
            return ()
        out: list[str] = []
        for item in node.value:
            value = self.scalar(item) if isinstance(item, ScalarNode) else None
            if not isinstance(value, str) or not _TAG_RE.match(value):
                self.error(item, f"{label}: tag {value!r} must be a name matching "
                           "[A-Za-z0-9][A-Za-z0-9_.:/-]* (quote it if YAML reads a number)")
            elif value in out:
                self.error(item, f"{label}: tag {value!r} appears twice; keep one")
            else:
                out.append(value)
        return tuple(out)

    def models(self, node: Node, label: str) -> tuple[str, ...]:
        """``models``: a list of distinct model names (problems reported, then ``()``)."""
        if not isinstance(node, SequenceNode):
            self.error(node, f"{label}: models must be a list of the names of the models that "
                       "read it, e.g. models: [fraud-v3]")
            return ()
        out: list[str] = []
        for item in node.value:
            value = self.scalar(item) if isinstance(item, ScalarNode) else None
            if not isinstance(value, str) or not _MODEL_RE.match(value):
                self.error(item, f"{label}: model {value!r} must be a name matching "
                           "[A-Za-z0-9][A-Za-z0-9_.:/-]*, at most 200 characters (quote it if "
                           "YAML reads a number)")
            elif value in out:
                self.error(item, f"{label}: model {value!r} appears twice; keep one")
            else:
                out.append(value)
        return tuple(out)

    def feature_name(self, node: Node) -> str | None:
        name = self.string(node, "feature name")
        if name is None:
            return None
        if name.startswith("_"):
            self.error(
                node,
                f"feature name {name!r} starts with '_', which is reserved for "
                f"{', '.join(RESERVED_FIELDS)}; rename it",
            )
            return None
        if not _NAME_RE.match(name):
            self.error(node, f"feature name {name!r} must match [A-Za-z][A-Za-z0-9_]*; rename it")
            return None
        if "__" in name:
            self.error(
                node,
                f"feature name {name!r} contains '__', which separates feature "
                "and window in Redis fields; use a single '_'",
            )
            return None
        return name

    def where(self, node: Node, label: str) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str):
            self.error(
                node,
                f"{label}: where must be a quoted expression string, e.g. "
                "where: \"status == 'completed'\"",
            )
            return None
        try:
            return canonical_where(value)
        except ExpressionError as exc:
            self.error(node, f"{label}: where does not parse at column {exc.column}: {exc.reason}")
            return None

    def q(self, node: Any, owner: Node, agg: AggKind | None, label: str) -> float | None:
        if agg is not AggKind.PERCENTILE:
            if node is not _MISSING:
                self.error(node, f"{label}: q is only for percentile; remove it")
            return None
        if node is _MISSING:
            self.error(
                owner, f"{label}: percentile needs q, the quantile in (0, 1); add e.g. q: 0.95"
            )
            return None
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            self.error(
                node,
                f"{label}: q must be a number strictly between 0 and 1 (e.g. 0.95), got {value!r}",
            )
            return None
        return float(value)

    def k(self, node: Any, owner: Node, agg: AggKind | None, label: str) -> int | None:
        if agg not in _LIST_AGGS:
            if node is not _MISSING:
                self.error(node, f"{label}: k is only for last_k and top_k; remove it")
            return None
        if node is _MISSING:
            self.error(owner, f"{label}: {agg} needs k, how many values to keep; add e.g. k: 10")
            return None
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(node, f"{label}: k must be an integer >= 1, got {value!r}")
            return None
        return value

    def exact_up_to(self, node: Any, agg: AggKind | None, label: str) -> int | None:
        if node is _MISSING:
            return None
        if agg not in (AggKind.COUNT_DISTINCT, AggKind.TOP_K):
            self.error(node, f"{label}: exact_up_to is only for count_distinct and top_k; "
                       "remove it")
            return None
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(node, f"{label}: exact_up_to must be an integer >= 1, got {value!r}")
            return None
        return value

    # ------------------------------------------------------------ windows

    def windows(self, node: Node, label: str) -> list[WindowDef] | None:
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(node, f"{label}: windows must be a non-empty list, e.g. [5m, 1h]")
            return None
        out = [self.window(item, label) for item in node.value]
        if any(w is None for w in out):
            return None
        return [w for w in out if w is not None]

    def window(self, node: Node, label: str) -> WindowDef | None:
        if isinstance(node, ScalarNode):
            value = self.scalar(node)
            if value == "lifetime":
                return WindowDef(WindowKind.LIFETIME, None, None, "lifetime")
            width = self.duration(node, f"{label}: window")
            if width is None:
                return None
            return WindowDef(
                WindowKind.SLIDING, width, default_hop_ms(width), format_duration(width)
            )
        spec = self.mapping(node, f"a window of {label}", _WINDOW_KEYS)
        if not isinstance(node, MappingNode):
            return None
        kind = WindowKind.SLIDING
        if "type" in spec:
            got = self.choice(
                spec["type"], f"{label}: window type", tuple(k.value for k in WindowKind)
            )
            if got is None:
                return None
            kind = WindowKind(got)
        ok = True
        for key, value_node in spec.items():
            if key not in _WINDOW_ALLOWED[kind]:
                self.error(
                    value_node,
                    f"{label}: {key!r} does not apply to a {kind.value} "
                    f"window; remove it (allowed: "
                    f"{', '.join(sorted(_WINDOW_ALLOWED[kind]))})",
                )
                ok = False

        size: int | None = None
        if "size" in _WINDOW_ALLOWED[kind]:
            if "size" in spec:
                size = self.duration(spec["size"], f"{label}: window size")
            else:
                self.error(node, f"{label}: a {kind.value} window needs size; add e.g. size: 1h")
            ok = ok and size is not None

        hop: int | None = None
        exact = emit_final = False
        if kind is WindowKind.SLIDING and size is not None:
            hop = default_hop_ms(size)
            if "hop" in spec:
                hop_node = spec["hop"]
                if isinstance(hop_node, ScalarNode) and self.scalar(hop_node) == "exact":
                    hop, exact = None, True
                else:
                    hop = self.duration(hop_node, f"{label}: hop (or 'exact')")
                    if hop is not None and hop > size:
                        self.error(
                            hop_node,
                            f"{label}: hop {format_duration(hop)} is larger "
                            f"than the window size {format_duration(size)}; use a "
                            "smaller hop",
                        )
                        hop = None
                    ok = ok and hop is not None
        elif kind is WindowKind.TUMBLING:
            hop = size
            if "emit" in spec:
                emit = self.choice(spec["emit"], f"{label}: emit", _EMITS)
                emit_final = emit == "final"
                ok = ok and emit is not None
        elif kind is WindowKind.HOPPING:
            if "step" not in spec:
                self.error(node, f"{label}: a hopping window needs step; add e.g. step: 5m")
                ok = False
            else:
                hop = self.duration(spec["step"], f"{label}: step")
                if hop is not None and size is not None and hop > size:
                    self.error(
                        spec["step"],
                        f"{label}: step {format_duration(hop)} is larger "
                        f"than the window size {format_duration(size)}; use a smaller "
                        "step",
                    )
                    hop = None
                ok = ok and hop is not None
        elif kind is WindowKind.SESSION:
            if "gap" not in spec:
                self.error(node, f"{label}: a session window needs gap; add e.g. gap: 30m")
                ok = False
            else:
                size = self.duration(spec["gap"], f"{label}: gap")
                ok = ok and size is not None

        name = self.window_label(spec["name"], label) if "name" in spec else None
        if not ok or ("name" in spec and name is None):
            return None
        if name is None:
            if kind is WindowKind.LIFETIME:
                name = "lifetime"
            elif kind is WindowKind.SESSION:
                name = f"session_{format_duration(size or 0)}"
            else:
                name = format_duration(size or 0)
        return WindowDef(kind, size, hop, name, exact=exact, emit_final=emit_final)

    def window_label(self, node: Node, label: str) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or not _LABEL_RE.match(value) or "__" in value:
            self.error(
                node,
                f"{label}: window name {value!r} must match "
                "[A-Za-z0-9][A-Za-z0-9_]* without '__' (it ends the Redis field name)",
            )
            return None
        return value

    # ------------------------------------------------------------ cross checks

    def check_fields(self, features: list[FeatureDef]) -> None:
        seen: dict[str, int] = {}
        for feature in features:
            lines = self.window_lines.get(feature.line, [])
            for index, window in enumerate(feature.windows):
                redis_field = feature.redis_field(window)
                line = lines[index] if index < len(lines) else feature.line
                if redis_field in seen:
                    self.error(
                        line,
                        f"feature {feature.name!r}: Redis field {redis_field!r} "
                        f"is produced twice (also at line {seen[redis_field]}); drop "
                        "the duplicate window or give one a distinct 'name:'",
                    )
                else:
                    seen[redis_field] = line

    def defaults(self, node: Node, features: list[FeatureDef]) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            self.error(node, "defaults must be a mapping of feature (or feature__window) to value")
            return {}
        by_name = {f.name: f for f in features}
        by_field = {f.redis_field(w): f for f in features for w in f.windows}
        valid = sorted([*by_name, *by_field])
        per_feature: dict[str, Any] = {}
        per_field: dict[str, Any] = {}
        spec = self.mapping(
            node,
            "defaults",
            tuple(valid),
            unknown="names no feature (or feature__window field) of this topology",
            ignore=frozenset(self.declared - by_name.keys()),
        )
        for key, value_node in spec.items():
            feature = by_name.get(key) or by_field[key]
            value = self.default_value(value_node, feature)
            if value is _MISSING:
                continue
            if key in by_name:
                per_feature[key] = value
            else:
                per_field[key] = value
        out: dict[str, Any] = {}
        for name, value in per_feature.items():
            for window in by_name[name].windows:
                out[by_name[name].redis_field(window)] = value
        out.update(per_field)
        return out

    def default_value(self, node: Node, feature: FeatureDef) -> Any:
        value = self.scalar(node)
        agg = feature.agg
        if agg in _LIST_AGGS:
            good = isinstance(value, list) and all(_is_scalar(v) for v in value)
            want = "a list, e.g. []"
        elif agg in _SCALAR_AGGS:
            good = _is_scalar(value)
            want = "a number, string or boolean"
        else:
            good = isinstance(value, int | float) and not isinstance(value, bool)
            want = "a number"
        if not good:
            self.error(
                node, f"default for {feature.name!r} ({agg.value}) must be {want}, got {value!r}"
            )
            return _MISSING
        return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)
