"""Which events of a batch the stream accepts: decoding, then the late rule, in offset order.

The worker, a replay, a training set and verify must agree on every decision: a record
that is malformed for one is malformed for all, and an event that is late for one is late
for all, or a training set would learn from events the model is never served. So the
decisions are made here, once: :class:`Acceptance` decodes a batch with the topology's
:class:`~streamfeat.records.Decoder` and marks the late events with
:func:`~streamfeat.operators.late_mask` against the partition's running stream time.
:class:`~streamfeat.pipeline.PartitionPipeline` judges every batch here before its
operators aggregate it; offline code that needs the accepted events themselves (the
training set sorts them by event time) uses :class:`Acceptance` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamfeat.operators import late_mask
from streamfeat.records import DecodedBatch, Decoder, RawRecord, RecordBatch, as_batch
from streamfeat.topology import TopologyDef

__all__ = ["Acceptance", "AcceptedEvents", "DeadLetter", "Verdict"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the stream refused, and why.

    ``record`` is as consumed; for a re-keyed stream ``origin`` names the record in the
    source topic (partition, offset), which is what a dead letter reports.
    """

    record: RawRecord
    reason: str
    kind: str  # "malformed" | "late"
    topology: str
    origin: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class AcceptedEvents:
    """The accepted events of one batch as columns, in offset order."""

    ts: list[int]
    offsets: list[int]
    keys: list[str]
    records: list[Any]  # read-only mappings of the fields the topology reads


@dataclass(frozen=True, slots=True)
class Verdict:
    """One batch judged: its decoded events, which of them are late, the stream time after.

    ``ts`` and ``late`` have one entry per decoded (well-formed) event, like the columns
    of ``decoded``; ``stream_time`` is ``None`` only while no event has been seen yet.
    """

    batch: RecordBatch
    decoded: DecodedBatch
    ts: npt.NDArray[np.int64]
    late: npt.NDArray[np.bool_]
    stream_time: int | None
    topology: str
    lateness_ms: int

    @property
    def malformed(self) -> int:
        return len(self.decoded.errors)

    @property
    def late_count(self) -> int:
        return int(np.count_nonzero(self.late))

    @property
    def accepted_count(self) -> int:
        return len(self.decoded.keys) - self.late_count

    def accepted(self) -> AcceptedEvents:
        """The events that are neither malformed nor late, with their offsets."""
        dec, offsets = self.decoded, self.batch.offsets
        ok = np.flatnonzero(~self.late).tolist()
        return AcceptedEvents(
            [dec.ts[i] for i in ok],
            [offsets[dec.positions[i]] for i in ok],
            [dec.keys[i] for i in ok],
            [dec.records[i] for i in ok],
        )

    def dead_letters(self) -> list[DeadLetter]:
        """The malformed and the late records, with their reasons, in offset order."""
        batch, dec = self.batch, self.decoded
        out = [DeadLetter(batch[pos], reason, "malformed", self.topology, batch.origin(pos))
               for pos, reason in dec.errors]
        for i in self.late.nonzero()[0].tolist():
            reason = (f"late: event time {dec.ts[i]} is over {self.lateness_ms} ms behind "
                      "stream time (it came after its windows closed); raise the topology's "
                      "lateness, or reduce the producer's delay")
            pos = dec.positions[i]
            out.append(DeadLetter(batch[pos], reason, "late", self.topology, batch.origin(pos)))
        if out:
            out.sort(key=lambda d: d.record.offset)
        return out


class Acceptance:
    """Judges the batches of one partition, in offset order, as the worker does.

    Keeps the partition's stream time (the largest event time seen): pass
    ``stream_time`` to continue from restored state.
    """

    def __init__(
        self, topology: TopologyDef, partition: int, *, stream_time: int | None = None
    ) -> None:
        self.topology = topology
        self.partition = partition
        self.stream_time = stream_time
        self.decoder = Decoder(topology)
        self.lateness_ms = int(topology.lateness_ms)
        self.check_keys = topology.source.keyed_by_entity
        self.origins_seen: dict[int, int] = {}
        """Re-keyed stream: the highest source offset taken per source partition."""

    def judge(self, records: RecordBatch | Sequence[RawRecord]) -> Verdict:
        """Decode the next batch and decide which of its events are late.

        In a re-keyed stream a record the first stage wrote twice is dropped first: the
        verdict's ``batch`` holds the records taken.
        """
        batch = as_batch(records, self.partition)
        if batch.origins is not None:
            batch = self.drop_duplicates(batch)
        decoded = self.decoder.decode(batch.values, batch.kafka_ts)
        if self.check_keys and batch.origins is None:
            decoded = _refuse_foreign_keys(decoded, batch.keys, self.topology)
        ts = np.asarray(decoded.ts, dtype=np.int64)
        late, self.stream_time = late_mask(ts, self.stream_time, self.lateness_ms)
        return Verdict(batch, decoded, ts, late, self.stream_time, self.topology.name,
                       self.lateness_ms)

    def drop_duplicates(self, records: RecordBatch) -> RecordBatch:
        """Records of a re-keyed stream not taken before, by source (partition, offset).

        The first stage writes a source partition's records in offset order; after a crash
        it writes again from its last stored offset, so a record already taken comes again
        with a source offset at or below the highest taken from its partition.
        """
        origins = records.origins
        if origins is None:
            return records
        seen = self.origins_seen
        keep: list[int] = []
        for i, (p, o) in enumerate(zip(origins.partitions, origins.offsets, strict=True)):
            if o > seen.get(p, -1):
                seen[p] = o
                keep.append(i)
        return records if len(keep) == len(records) else records.take(keep)


def _keyed_alike(keys: list[str], raw_keys: Sequence[bytes | None]) -> bool:
    """Whether ``raw_keys[i] == keys[i].encode()`` for every ``i`` (``False`` may be wrong
    only when a key holds a NUL: the caller then compares record by record).

    Joined with NUL, the raw keys hold exactly ``n - 1`` NUL bytes only when none holds one
    itself; UTF-8 puts a NUL byte where the text has a NUL character and nowhere else, so
    the two joins are equal exactly when every key is.
    """
    if len(keys) != len(raw_keys):
        return False
    if not keys:
        return True
    try:
        joined = b"\x00".join(raw_keys)  # type: ignore[arg-type]  # None: TypeError
    except TypeError:
        return False
    return joined.count(0) == len(keys) - 1 and "\x00".join(keys).encode() == joined


def _refuse_foreign_keys(decoded: DecodedBatch, raw_keys: Sequence[bytes | None],
                         topology: TopologyDef) -> DecodedBatch:
    """Events whose record key is not their entity id become malformed (reason ``key``).

    The topology says its topic is keyed by the entity, so an entity's events are all in
    one partition; a record keyed otherwise may sit in another partition with the rest of
    its entity's events elsewhere, and aggregating it here would serve split values. A
    record without a key is taken as it is (a topic of one partition, or a producer that
    partitions by the entity itself).
    """
    positions, keys = decoded.positions, decoded.keys
    # Usually every record is keyed by its entity: a few calls in C say so, and only a batch
    # where they do not is searched record by record.
    good = raw_keys if len(positions) == len(raw_keys) else [raw_keys[p] for p in positions]
    if _keyed_alike(keys, good):
        return decoded
    foreign = [i for i, (pos, entity) in enumerate(zip(positions, keys, strict=True))
               if (raw := raw_keys[pos]) is not None and raw != entity.encode()]
    if not foreign:
        return decoded
    drop = set(foreign)
    keep = [i for i in range(len(keys)) if i not in drop]
    errors = list(decoded.errors)
    for i in foreign:
        raw = raw_keys[positions[i]] or b""
        errors.append((positions[i], (
            f"key: the record's key {raw[:64].decode('utf-8', 'replace')!r} is not its "
            f"{topology.source.key} {keys[i]!r}, but topology {topology.name!r} declares its "
            "topic keyed by the entity (an entity's events would be split across partitions); "
            "set source.keyed_by_entity: false to re-key the topic")))
    errors.sort()
    return DecodedBatch(
        keys=[keys[i] for i in keep], ts=[decoded.ts[i] for i in keep],
        records=[decoded.records[i] for i in keep], positions=[positions[i] for i in keep],
        errors=errors, fields={k: [v[i] for i in keep] for k, v in decoded.fields.items()})
