"""Durable state: every commit of a partition store is first written to checkpoints in an
object store, and a store opened behind them (a new host) restores from them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from streamfeat.errors import StateError
from streamfeat.state import PartitionStore
from streamfeat.state import durable as durable_module
from streamfeat.state.durable import Checkpoints, DurableStore
from streamfeat.storage import LocalStore


def contents(store: PartitionStore) -> tuple[object, dict[str, bytes]]:
    c = store.committed()
    return (c.next_offset, c.meta, c.origins), dict(store.entities())


def commits(store: PartitionStore, rng: random.Random, n: int, start: int = 0) -> int:
    """``n`` commits of random entity changes and deletions; returns the next offset."""
    offset = start
    for i in range(n):
        offset += rng.randint(1, 50)
        changed = [(f"e{rng.randint(0, 40)}", rng.randbytes(rng.randint(1, 200)))
                   for _ in range(rng.randint(0, 12))]
        gone = sorted({f"e{rng.randint(0, 40)}" for _ in range(rng.randint(0, 3))}
                      - {e for e, _d in changed})
        store.commit(offset, f"meta-{i}".encode(), changed, gone,
                     origins=f"o{i}".encode() if i % 2 else None)
    return offset


@pytest.fixture
def checkpoints(tmp_path: Path) -> Checkpoints:
    return Checkpoints(LocalStore(tmp_path / "bucket"))


def test_a_new_host_restores_exactly_what_the_old_one_committed(
        tmp_path: Path, checkpoints: Checkpoints) -> None:
    rng = random.Random(1)
    a = DurableStore(tmp_path / "host-a", "t", "orders", 3, checkpoints=checkpoints)
    commits(a, rng, 30)
    want = contents(a)
    a.close()
    b = DurableStore(tmp_path / "host-b", "t", "orders", 3, checkpoints=checkpoints)
    assert contents(b) == want and b.restored_bytes > 0 and b.durable_offset == want[0][0]
    other = DurableStore(tmp_path / "host-b", "t", "orders", 4, checkpoints=checkpoints)
    assert other.committed().next_offset is None  # each partition its own chain
    b.close()
    other.close()


def test_bases_bound_the_chain_and_restores_stay_exact(
        tmp_path: Path, checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable_module, "_BASE_MIN_BYTES", 2000)
    rng = random.Random(2)
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    offset = 0
    for round_ in range(5):
        offset = commits(a, rng, 20, offset)
        chain = checkpoints.chain(a.name)
        assert chain[0].base, "a base was written"
        stored = checkpoints.store.list(f"_checkpoints/{a.name}")
        assert len(stored) == len(chain), "older objects are deleted once a base covers them"
        b = DurableStore(tmp_path / f"b{round_}", "t", "orders", 0, checkpoints=checkpoints)
        assert contents(b) == contents(a)
        b.close()
    a.close()


def test_a_kill_during_a_restore_restores_again(
        tmp_path: Path, checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    commits(a, rng, 10)
    want = contents(a)
    a.close()
    real_read = Checkpoints.read
    calls = 0

    def dying_read(self: Checkpoints, checkpoint: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt("killed")
        return real_read(self, checkpoint)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpoints, "read", dying_read)
    with pytest.raises(KeyboardInterrupt):
        DurableStore(tmp_path / "b", "t", "orders", 0, checkpoints=checkpoints)
    monkeypatch.setattr(Checkpoints, "read", real_read)
    # what the killed restore left has no offset: the next open restores again, whole
    half = PartitionStore(tmp_path / "b", "t", "orders", 0)
    assert half.committed().next_offset is None
    half.close()
    b = DurableStore(tmp_path / "b", "t", "orders", 0, checkpoints=checkpoints)
    assert contents(b) == want
    b.close()


def test_a_crash_between_the_checkpoint_and_the_local_commit(
        tmp_path: Path, checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint is written first: after a crash before the local write, the same host
    restores from the checkpoints, which are ahead."""
    rng = random.Random(4)
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    offset = commits(a, rng, 5)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt("killed before the local commit")

    monkeypatch.setattr(PartitionStore, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        a.commit(offset + 10, b"meta-last", [("e1", b"new")], ["e2"])
    monkeypatch.undo()
    a.close()
    again = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    (next_offset, meta, _origins), entities = contents(again)
    assert (next_offset, meta, entities.get("e1"), "e2" in entities) == (
        offset + 10, b"meta-last", b"new", False)
    again.close()


def test_state_kept_only_locally_becomes_durable_at_open(
        tmp_path: Path, checkpoints: Checkpoints) -> None:
    rng = random.Random(5)
    local = PartitionStore(tmp_path / "a", "t", "orders", 0)
    commits(local, rng, 10)
    want = contents(local)
    local.close()
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)  # a base now
    assert checkpoints.chain(a.name)[0].base
    a.close()
    b = DurableStore(tmp_path / "b", "t", "orders", 0, checkpoints=checkpoints)
    assert contents(b) == want
    b.close()


def test_a_corrupt_checkpoint_is_named(tmp_path: Path, checkpoints: Checkpoints) -> None:
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    commits(a, random.Random(6), 3)
    a.close()
    last = checkpoints.chain(a.name)[-1]
    checkpoints.store.put(last.path, b"not a checkpoint")
    with pytest.raises(StateError, match="is corrupt"):
        DurableStore(tmp_path / "b", "t", "orders", 0, checkpoints=checkpoints)


def test_a_base_of_many_parts_restores_exactly_and_an_unfinished_one_is_not_read(
        tmp_path: Path, checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base is written a few entities at a time (parts), so that writing it never holds
    the whole state in memory; parts without their ``-base.ckpt`` (a crash while writing
    them) are not read, and go with the next base."""
    monkeypatch.setattr(durable_module, "_BASE_MIN_BYTES", 2000)
    monkeypatch.setattr(durable_module, "_PART_ENTITIES", 4)
    rng = random.Random(3)
    a = DurableStore(tmp_path / "a", "t", "orders", 0, checkpoints=checkpoints)
    offset = commits(a, rng, 40)
    folder = f"_checkpoints/{a.name}"
    base = checkpoints.chain(a.name)[0]
    assert base.base
    parts = [p for p in checkpoints.store.list(folder) if p.endswith(".part")]
    assert len(parts) >= 3 and all(p.rsplit("/", 1)[-1][:20] == f"{base.offset:020d}"
                                   for p in parts)
    want = contents(a)
    b = DurableStore(tmp_path / "b", "t", "orders", 0, checkpoints=checkpoints)
    assert contents(b) == want
    b.close()
    # parts of a base that was never finished, at a later offset: not read
    checkpoints.write(a.name, offset + 1, {"entities": [["e1", b"stray"]]}, base=True, part=0)
    c = DurableStore(tmp_path / "c", "t", "orders", 0, checkpoints=checkpoints)
    assert contents(c) == want
    c.close()
    commits(a, rng, 40, offset + 2)  # the next bases delete every older part
    newest = checkpoints.chain(a.name)[0].offset
    assert all(int(p.rsplit("/", 1)[-1][:20]) == newest
               for p in checkpoints.store.list(folder) if p.endswith(".part"))
    a.close()
