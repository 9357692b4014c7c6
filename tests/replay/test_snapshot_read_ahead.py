"""The snapshot reader's read-ahead thread changes nothing the caller sees: the same batches
for any batch size, a bad file's error in its place, and no thread left behind when the
caller stops early."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfeat.errors import StateError
from streamfeat.records import RawRecord
from streamfeat.snapshot import SnapshotWriter, reader
from streamfeat.snapshot.reader import iter_files, snapshot_files

ROWS = 3 * reader._CHUNK_ROWS + 123  # several Arrow batches per file


def _write(root: Path, first: int, n: int) -> None:
    w = SnapshotWriter(root, "t", 0)
    w.append([RawRecord(0, o, 1000 + o, f"k{o % 7}".encode(), f'{{"v":{o}}}'.encode())
              for o in range(first, first + n)])
    w.close()


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ahead")
    _write(root, 0, ROWS)
    _write(root, ROWS, 500)
    return root


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "streamfeat-snapshot-read"]


@settings(max_examples=10, deadline=None)
@given(batch_rows=st.integers(min_value=1, max_value=ROWS + 1000))
def test_the_same_records_in_batches_of_the_size_asked(snap: Path, batch_rows: int) -> None:
    batches = list(iter_files(snapshot_files(snap, "t", 0), batch_rows=batch_rows))
    assert all(len(b) == batch_rows for b in batches[:-1])
    assert 0 < len(batches[-1]) <= batch_rows
    offsets = [o for b in batches for o in b.offsets]
    assert offsets == list(range(ROWS + 500))
    assert [b.values[0] for b in batches] == [f'{{"v":{b.offsets[0]}}}'.encode()
                                               for b in batches]
    assert not _threads()


def test_stopping_early_stops_the_thread(snap: Path) -> None:
    it = iter_files(snapshot_files(snap, "t", 0), batch_rows=1000)
    assert next(it).offsets[0] == 0
    assert _threads()
    it.close()
    assert not _threads()


def test_an_error_while_reading_is_raised_in_its_place(
    snap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = reader._open

    class Failing:
        def __init__(self, f: reader.SnapshotFile) -> None:
            self.pf = real(f)
            self.schema_arrow = self.pf.schema_arrow

        def iter_batches(self, **kwargs: object):  # type: ignore[no-untyped-def]
            for i, batch in enumerate(self.pf.iter_batches(**kwargs)):
                if i == 2:
                    raise OSError("disk on fire")
                yield batch

    monkeypatch.setattr(reader, "_open", Failing)
    seen = []
    with pytest.raises(StateError, match="disk on fire"):
        for b in iter_files(snapshot_files(snap, "t", 0), batch_rows=1000):
            seen.extend(b.offsets)
    assert seen == list(range(2 * 1000))  # every record of the batches before the error
    assert not _threads()
