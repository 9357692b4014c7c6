"""What a sink is given and what it answers: :class:`UpdateBatch` in, :class:`WriteResult` out.

Plain data, no Redis: the pipeline produces these (and must not depend on a Redis client),
the sinks consume them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Update", "UpdateBatch", "WriteResult"]


@dataclass(frozen=True, slots=True)
class Update:
    """The new values of one entity.

    ``values`` is keyed by Redis field name (``orders__1h``); a value of ``None``
    deletes the field, a field not named is left as stored. ``asof_ms`` becomes
    ``_asof``; ``version`` (from :func:`streamfeat.sinks.values.version`) becomes
    ``_v`` and decides whether the write is applied.
    """

    entity_id: str
    values: Mapping[str, Any]
    asof_ms: int
    version: str


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """The new values of many entities, as columns: what the worker writes per batch.

    ``columns[j][i]`` is the value of field ``names[j]`` for ``entity_ids[i]``; a value
    of ``None`` deletes its field, and a field of the topology not named is left as stored
    (a feature-window still being computed from history). ``deletes``: fields no longer
    declared (a removed or renamed feature), deleted from every entity's hash. All
    entities share ``asof_ms`` and ``version`` (one micro-batch of one partition).
    Cheaper than one :class:`Update` per entity: no dict per entity, and the values are
    encoded a column at a time.

    ``refresh``: the values of a changed definition as of a version already written (the
    same records, newly computed): applied when the stored version is not newer, rather
    than only when it is older.
    """

    entity_ids: Sequence[str]
    names: Sequence[str]
    columns: Sequence[Sequence[Any]]
    asof_ms: int
    version: str
    deletes: Sequence[str] = ()
    refresh: bool = False

    def __len__(self) -> int:
        return len(self.entity_ids)

    def updates(self) -> list[Update]:
        """The same writes as one :class:`Update` per entity."""
        rows = zip(*self.columns, strict=True) if self.columns else ([] for _ in self.entity_ids)
        return [Update(e, dict(zip(self.names, row, strict=True)), self.asof_ms, self.version)
                for e, row in zip(self.entity_ids, rows, strict=True)]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a :meth:`RedisSink.write` did.

    ``duplicate``: rejected because the stored version equals the new one (the
    same write was already applied, e.g. a batch re-sent after a lost reply).
    ``stale``: rejected because the stored version is newer (a fenced or late writer).
    """

    applied: int = 0
    duplicate: int = 0
    stale: int = 0
    rejected_ids: tuple[str, ...] = ()
    stale_ids: tuple[str, ...] = ()

    @property
    def rejected(self) -> int:
        """Writes not applied: ``duplicate + stale``."""
        return self.duplicate + self.stale
