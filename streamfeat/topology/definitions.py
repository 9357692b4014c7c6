"""Frozen definitions of what a user declared in a topology file.

These are pure values: no I/O and no runtime state. Operators are built from
them (``streamfeat.operators``); the YAML loader (``streamfeat.topology.loader``)
produces them.

Time bounds (the decoder and the loader enforce them, so no arithmetic on times can
overflow and no time of data can equal a sentinel):

- an accepted event time lies in ``0 .. MAX_EVENT_TIME_MS`` (1970-01-01 to
  9999-12-31T23:59:59.999Z, the instants ISO-8601 and Python's ``datetime`` can name);
- a duration (window size, hop, gap, lateness, ttl, freshness, max_future) is at most
  ``MAX_DURATION_MS`` (365000d, about 1000 years).

So every window computation (``ts + size``, ``(t - size) // hop``, ``(b + 1) * hop + size``,
a session's ``last + gap``) stays below ``2**49``: exact in int64 and in float64, and
``2**14`` times below ``np.iinfo(np.int64).max``, which the operators use as the "never"
sentinel (``streamfeat.operators.slots.NEVER``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ASOF_FIELD",
    "DEFAULT_MAX_FUTURE_MS",
    "DISTINCT_EXACT_UP_TO",
    "MAX_DURATION_MS",
    "MAX_EVENT_TIME_MS",
    "MODEL_NAME_PATTERN",
    "RESERVED_FIELDS",
    "TOP_K_EXACT_UP_TO",
    "UPDATED_FIELD",
    "VERSION_FIELD",
    "AggKind",
    "FeatureDef",
    "SchemaDef",
    "SourceDef",
    "TopologyDef",
    "WindowDef",
    "WindowKind",
    "default_hop_ms",
    "format_duration",
]

ASOF_FIELD = "_asof"
"""Redis field of every entity hash: the stream time (ms) its values are as of."""
UPDATED_FIELD = "_updated"
"""Redis field: wall-clock time (ms) of the write."""
VERSION_FIELD = "_v"
"""Redis field: the write's version (generation, partition, offset); only newer ones apply."""
RESERVED_FIELDS = (ASOF_FIELD, UPDATED_FIELD, VERSION_FIELD)
"""Field names no feature may take (contract section 4): the one list every layer uses."""
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}"
"""A model's name (``fraud-v3``, ``risk/churn:2``), as a topology's ``models:`` declares it
and as a reader names itself (``Client(model=...)``, ``streamfeat serve``'s ``model``): at
most 200 characters, never ``|`` or a space, which the registry's Redis fields use."""

MS = 1
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

MAX_EVENT_TIME_MS = 253_402_300_799_999
"""The latest event time accepted: 9999-12-31T23:59:59.999Z (below ``2**48``); later ones
are malformed. Far below int64's maximum, the operators' "never" sentinel."""
MAX_DURATION_MS = 365_000 * DAY
"""The longest duration a topology may declare (365000d, about 1000 years)."""
DEFAULT_MAX_FUTURE_MS = HOUR
"""``max_future`` when a topology does not set it (contract section 3)."""
DISTINCT_EXACT_UP_TO = 1000
"""``exact_up_to`` of ``count_distinct`` when not set: exact, then HyperLogLog."""
TOP_K_EXACT_UP_TO = 10_000
"""``exact_up_to`` of ``top_k`` when not set: exact counts, then a Misra-Gries summary."""

_UNITS = (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND), ("ms", MS))
_DEFAULT_HOPS = (
    SECOND, 5 * SECOND, 10 * SECOND, 30 * SECOND, MINUTE, 5 * MINUTE,
    10 * MINUTE, 30 * MINUTE, HOUR, DAY,
)


def format_duration(ms: int) -> str:
    """Canonical text of a duration: the largest unit that divides it (``3600000`` -> ``1h``)."""
    for unit, size in _UNITS:
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def default_hop_ms(size_ms: int) -> int:
    """Contract section 2: the largest of 1s..1d not above W/60, else 1s."""
    best = SECOND
    for hop in _DEFAULT_HOPS:
        if hop * 60 <= size_ms:
            best = hop
    return best


class WindowKind(StrEnum):
    SLIDING = "sliding"
    TUMBLING = "tumbling"
    HOPPING = "hopping"
    SESSION = "session"
    LIFETIME = "lifetime"


class AggKind(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    VAR = "var"
    STDDEV = "stddev"
    COUNT_DISTINCT = "count_distinct"
    PERCENTILE = "percentile"
    FIRST = "first"
    LAST = "last"
    LAST_K = "last_k"
    TOP_K = "top_k"

    @property
    def needs_field(self) -> bool:
        return self is not AggKind.COUNT

    @property
    def numeric(self) -> bool:
        """Whether the aggregated field must be a number."""
        return self in _NUMERIC_AGGS


_NUMERIC_AGGS = frozenset(
    {AggKind.SUM, AggKind.MEAN, AggKind.MIN, AggKind.MAX, AggKind.VAR, AggKind.STDDEV,
     AggKind.PERCENTILE}
)


@dataclass(frozen=True, slots=True)
class WindowDef:
    """One window of a feature.

    ``size_ms``: window size W (sliding, tumbling, hopping) or the gap G (session);
    ``None`` for lifetime. ``hop_ms``: bucket width H for sliding (the contract's
    default when not given), the step S for hopping, W for tumbling; ``None`` for
    ``hop: exact``, session and lifetime. ``label`` is the Redis field suffix.
    """

    kind: WindowKind
    size_ms: int | None
    hop_ms: int | None
    label: str
    exact: bool = False
    emit_final: bool = False

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "size_ms": self.size_ms,
            "hop_ms": self.hop_ms,
            "exact": self.exact,
            "emit_final": self.emit_final,
        }


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One declared feature: an aggregation over one or more windows."""

    name: str
    agg: AggKind
    windows: tuple[WindowDef, ...]
    field: str | None = None
    where: str | None = None
    q: float | None = None
    k: int | None = None
    exact_up_to: int = DISTINCT_EXACT_UP_TO
    line: int = 0
    # dataclasses.field: ``field`` is a member of this class
    description: str = dataclasses.field(default="", compare=False)
    """What the feature means, for people (``streamfeat registry``); not part of its state."""
    tags: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    """Labels to find it by (``pii``, ``fraud``); not part of its state."""
    models: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    """The models declared as reading it (besides the topology's ``models``: see
    :meth:`TopologyDef.models_of`); not part of its state."""

    def redis_field(self, window: WindowDef) -> str:
        """Contract section 4: ``{feature}__{window}``."""
        return f"{self.name}__{window.label}"

    def canonical(self, window: WindowDef) -> dict[str, Any]:
        """Everything that determines the state of this feature in this window."""
        return {
            "agg": self.agg.value,
            "field": self.field,
            "where": self.where,
            "q": self.q,
            "k": self.k,
            "exact_up_to": self.exact_up_to,
            "window": window.canonical(),
        }

    def state_hash(self, window: WindowDef) -> str:
        """Canonical hash of this feature-window: its state namespace.

        A changed definition gets a new namespace, so it never reads old state
        as if it were its own. The feature's name is not part of it (a rename
        keeps its state).
        """
        text = json.dumps(self.canonical(window), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SchemaDef:
    """The schema of a binary source format (``avro``, ``protobuf``), read from the files
    the topology names when it is loaded, so that every process that loads the topology
    decodes with the same schema (contract section 12)."""

    path: str
    """Where it was read: the Avro schema file, the descriptor set file, or the generated
    module (``module:NAME``), for messages."""
    content: bytes
    """avro: the schema's JSON text; protobuf: a serialized ``FileDescriptorSet`` holding the
    message type's file and every file it imports."""
    message: str = ""
    """protobuf: the full name of the message type of each record (``shop.Order``)."""
    framing: str = "plain"  # plain | confluent
    """``confluent``: each value starts with the magic byte 0 and a 4-byte big-endian
    schema id (then, for protobuf, the message indexes), as Confluent's serializers write."""
    schema_ids: tuple[int, ...] = ()
    """confluent: the schema registry ids whose schema this is; a record framed with
    another id is malformed."""


@dataclass(frozen=True, slots=True)
class SourceDef:
    """Where a topology's events come from and how to read them (``source:``)."""

    topic: str
    key: str
    """The entity id field of each record's value (string or int)."""
    format: str = "json"  # json | msgpack | avro | protobuf
    timestamp: str | None = None
    """The event-time field; ``None``: the Kafka record timestamp is the event time."""
    timestamp_unit: str = "ms"  # ms | s | iso8601
    keyed_by_entity: bool = True
    """Whether the topic's records are keyed (so partitioned) by the entity id. When
    ``False`` the worker re-keys them through ``<topology>.repartition`` so that all
    events of an entity are aggregated in one place (contract section 3)."""
    schema: SchemaDef | None = None
    """avro and protobuf: the records' schema; ``None`` for json and msgpack."""


@dataclass(frozen=True, slots=True)
class TopologyDef:
    """A whole topology file, validated."""

    name: str
    source: SourceDef
    features: tuple[FeatureDef, ...]
    entity: str = ""
    owner: str = ""
    description: str = ""
    version: int = 1
    lateness_ms: int = 0
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    """How far an event time may be after its record's Kafka timestamp; a later one is
    malformed (``future: ...``), so one record with a bad clock cannot move stream time
    and make every later event late (contract section 3)."""
    ttl_ms: int | None = None
    freshness_ms: int = SECOND
    defaults: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    models: tuple[str, ...] = field(default=(), compare=False)
    """The models declared as reading every feature of the topology (``models:`` at the top
    level); not part of any feature's state."""

    def redis_key(self, entity_id: str) -> str:
        """Contract section 4: ``sf:{name}:{entity_id}``."""
        return f"sf:{self.name}:{entity_id}"

    def redis_fields(self) -> list[str]:
        return [f.redis_field(w) for f in self.features for w in f.windows]

    def models_of(self, feature: FeatureDef) -> tuple[str, ...]:
        """The models declared as reading ``feature``: the topology's, then its own."""
        return tuple(dict.fromkeys((*self.models, *feature.models)))
