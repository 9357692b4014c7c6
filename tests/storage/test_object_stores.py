"""Object stores: the same behaviour from a local directory and from a real S3-compatible
server (moto's standalone server on loopback, or STREAMFEAT_S3), and whole-or-nothing writes
against a killed writer and a failed upload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfeat.errors import ConfigError
from streamfeat.storage import LocalStore, ObjectStore, open_store
from streamfeat.storage.remote import explain

from objectstore import S3

BIG = 32 * 1024 * 1024  # a multipart upload of 4 parts (pyarrow's parts are 10 MiB)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield open_store(tmp_path / "store")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        yield open_store(f"s3://{bucket}/some/prefix")


def test_put_get_list_delete(store: ObjectStore) -> None:
    assert store.list("") == [] and store.folders("") == []
    store.put("t/date=2026-01-01/partition=1/a", b"one")
    store.put("t/date=2026-01-01/partition=10/b", b"two")
    store.put("t/date=2026-01-02/partition=1/c", b"")
    store.put("t/date=2026-01-02/partition=1/c", b"three")  # replaced
    assert store.get("t/date=2026-01-02/partition=1/c") == b"three"
    assert store.list("t/date=2026-01-01/partition=1") == ["t/date=2026-01-01/partition=1/a"]
    assert store.list("t") == store.list("") == [
        "t/date=2026-01-01/partition=1/a", "t/date=2026-01-01/partition=10/b",
        "t/date=2026-01-02/partition=1/c"]
    assert store.list("u") == [] and store.folders("u") == []
    assert store.folders("") == ["t"]
    assert store.folders("t") == ["date=2026-01-01", "date=2026-01-02"]
    assert store.folders("t/date=2026-01-01") == ["partition=1", "partition=10"]
    with pytest.raises(FileNotFoundError):
        store.get("t/missing")
    store.delete(["t/date=2026-01-01/partition=10/b", "t/missing"])
    assert store.list("t/date=2026-01-01") == ["t/date=2026-01-01/partition=1/a"]
    # the URL opens the same store again (another process does that)
    assert open_store(store.url).get("t/date=2026-01-01/partition=1/a") == b"one"
    fs, root = store.filesystem()
    with fs.open_input_file(f"{root}/t/date=2026-01-01/partition=1/a") as f:
        assert f.read() == b"one"
    with pytest.raises(ValueError, match="relative"):
        store.put("../escape", b"x")


def test_a_big_object_round_trips(store: ObjectStore) -> None:
    data = os.urandom(BIG)
    store.put("big", data)
    assert store.get("big") == data


def test_local_put_killed_before_the_rename_leaves_nothing_visible(tmp_path: Path) -> None:
    script = f"""
import os, signal
from streamfeat.storage import LocalStore, objects
store = LocalStore({str(tmp_path)!r})
store.put("d/a", b"old")
objects.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
store.put("d/a", b"new")
store.put("d/b", b"never")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    store = LocalStore(tmp_path)
    assert len(list(tmp_path.glob("d/*.tmp"))) == 1  # the interrupted write, complete on disk
    assert store.list("d") == ["d/a"] and store.get("d/a") == b"old"
    store.clean("d")
    assert not list(tmp_path.glob("d/*.tmp")) and store.get("d/a") == b"old"


def _uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _wait_for_upload(client: Any, bucket: str, proc: subprocess.Popen[bytes] | None = None,
                     timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = _uploads(client, bucket)
        if found:
            return found[0]
        assert proc is None or proc.poll() is None, "the writer ended before any upload"
        time.sleep(0.005)
    raise AssertionError(f"no multipart upload started in {timeout_s} s")


def test_s3_put_killed_mid_upload_leaves_no_object(s3: S3, s3_bucket: str,
                                                   tmp_path: Path) -> None:
    url = f"s3://{s3_bucket}/p"
    script = f"""
import os
from streamfeat.storage import open_store
open_store({url!r}).put("k", os.urandom({BIG}))
raise SystemExit("the upload ended before the kill")
"""
    client = s3.client()
    with (tmp_path / "writer.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log)
    try:
        upload = _wait_for_upload(client, s3_bucket, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "writer.log").read_text()
    assert upload["Key"] == "p/k"
    # the upload was in flight when the process died, and nothing completes it
    assert [u["UploadId"] for u in _uploads(client, s3_bucket)] == [upload["UploadId"]]
    parts = client.list_parts(Bucket=s3_bucket, Key="p/k", UploadId=upload["UploadId"])
    assert len(parts.get("Parts", [])) < BIG // (10 * 2**20) + 1, "every part had been sent"
    store = open_store(url)
    assert store.list("") == []
    with pytest.raises(FileNotFoundError):
        store.get("k")
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    data = os.urandom(BIG)  # a restart writes the object again, whole
    store.put("k", data)
    assert store.get("k") == data


def test_s3_put_whose_upload_fails_midway_leaves_no_object(s3: S3, s3_bucket: str) -> None:
    """The server loses the upload while its parts are being sent (it is aborted under the
    writer): put raises, and the key never appears, not even with the parts sent before."""
    store = open_store(f"s3://{s3_bucket}")
    client = s3.client()
    failed: list[BaseException] = []

    def put() -> None:
        try:
            store.put("k", os.urandom(2 * BIG))
        except BaseException as exc:
            failed.append(exc)

    writer = threading.Thread(target=put)
    writer.start()
    try:
        upload = _wait_for_upload(client, s3_bucket)
        client.abort_multipart_upload(Bucket=s3_bucket, Key="k", UploadId=upload["UploadId"])
    finally:
        writer.join(120)
    assert failed and isinstance(failed[0], OSError), failed
    assert store.list("") == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_missing_bucket_and_unreachable_endpoint_say_what_to_set(
    s3: S3, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=r"bucket 'sf-no-such-bucket' does not exist at "
                                          r"http://.*AWS_ENDPOINT_URL.*create it"):
        open_store("s3://sf-no-such-bucket/snaps")
    with pytest.raises(ConfigError, match="names no bucket"):
        open_store("s3://")
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=f"cannot reach .*127.0.0.1:{port}.*AWS_ENDPOINT_URL"):
        open_store("s3://any-bucket/snaps")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://127.0.0.1:21")
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        open_store("s3://any-bucket/snaps")


def test_refused_credentials_name_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text pyarrow gives for a 403 of the first request (a private bucket asked without
    credentials, or with wrong ones)."""
    error = OSError("When getting information for bucket 'b': AWS Error ACCESS_DENIED during "
                    "HeadBucket operation: No response body.")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    text = str(explain(error, "s3://b/snaps"))
    assert "s3://b/snaps: access denied" in text
    assert "no credentials are set" in text and "AWS_SECRET_ACCESS_KEY" in text
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA...")
    assert "the credentials found (AWS_ACCESS_KEY_ID) were refused" in str(
        explain(error, "s3://b/snaps"))


def test_unknown_scheme_is_refused_with_what_works() -> None:
    with pytest.raises(ConfigError, match="not one pyarrow knows"):
        open_store("nosuchscheme://bucket/prefix")
