"""Object stores behind a URL: a bucket and prefix in S3 (or any S3-compatible server), GCS,
Azure, or whatever else pyarrow or fsspec can open, through :class:`ArrowStore`.

``s3://bucket/prefix`` takes the standard AWS settings from the environment:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (else
``AWS_PROFILE`` and ``~/.aws``, a web-identity token, the container or instance role: the AWS
SDK's default chain), ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (else the bucket's region is
asked from AWS) and ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for another
S3-compatible server (MinIO, Ceph, moto...; ``http://`` or ``https://``, path-style).

Whole or nothing: an object is written by one upload to its final key, never renamed (a
rename in S3 is a copy). The S3 stream is opened with ``allow_delayed_open=False`` and
``background_writes=True``: every object is a multipart upload, created when the stream
opens, its parts sent in the background, and completed by ``close()`` only after every part
succeeded (a failed part fails the close and the upload is never completed). A process killed
mid-upload never completes it either: the object does not exist, only parts that the
bucket's lifecycle rule ``AbortIncompleteMultipartUpload`` deletes (set one, e.g. 1 day).
The data is given to the stream in one ``write`` and never through ``with``: a pyarrow output
stream closed on an exception (``__exit__``, or its destructor) completes the upload with
what it was given so far. (With ``allow_delayed_open=True`` small objects would go in one
PUT, but a multipart upload that fails to start is then closed by a PUT of an empty object.)
Snapshot files are Parquet, whose footer is checked when read: even a part missing
would be refused by a reader, not read as fewer records.

GCS (``gs://``) and Azure (``abfs://``) objects also appear only when their upload is
finalized; through fsspec, whether an object is written whole depends on the backend (object
stores: yes; sftp, ftp: no).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from streamfeat.errors import ConfigError
from streamfeat.storage.objects import check_path

__all__ = ["ArrowStore", "explain", "open_remote", "s3_options"]

_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                         "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
_CREDENTIAL_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                      "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                      "ExpiredToken", "EXPIRED_TOKEN", "HTTP status 403", "HTTP response code: 403",
                      "No credentials", "UNRECOGNIZED_CLIENT")
_NETWORK_ERRORS = ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "Could not resolve",
                   "Connection refused", "Timeout was reached")


class ArrowStore:
    """Objects in a pyarrow filesystem under ``root`` (``bucket/prefix``)."""

    def __init__(self, fs: pafs.FileSystem, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.strip("/")
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url

    def _key(self, path: str) -> str:
        path = check_path(path).strip("/")
        return f"{self.root}/{path}" if path else self.root

    def _relative(self, key: str) -> str:
        return key[len(self.root) + 1:]

    def put(self, path: str, data: bytes) -> None:
        # One write, then close; no `with` (see the module docstring: a stream closed on an
        # exception would complete the upload with part of the data).
        stream = self.fs.open_output_stream(self._key(path))
        stream.write(data)
        stream.close()

    def get(self, path: str) -> bytes:
        # A random-access file reads the object in one ranged GET of its size (pyarrow's
        # input stream reads a large object in small chunks: 9 s for 48 MiB from moto).
        with self.fs.open_input_file(self._key(path)) as f:
            data: bytes = f.read()
        return data

    def _select(self, prefix: str, recursive: bool) -> builtins.list[pafs.FileInfo]:
        selector = pafs.FileSelector(self._key(prefix), recursive=recursive,
                                     allow_not_found=True)
        infos: builtins.list[pafs.FileInfo] = self.fs.get_file_info(selector)
        return infos

    def list(self, prefix: str) -> list[str]:
        return sorted(self._relative(i.path) for i in self._select(prefix, True)
                      if i.type == pafs.FileType.File)

    def delete(self, paths: Iterable[str]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self._key(path))

    def folders(self, prefix: str) -> builtins.list[str]:
        return sorted(i.base_name for i in self._select(prefix, False)
                      if i.type == pafs.FileType.Directory)

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        return self.fs, self.root

    def clean(self, prefix: str) -> None:
        """Nothing to clean: an interrupted upload is never visible (its parts go by the
        bucket's lifecycle rule)."""

    def check(self) -> None:
        """The bucket exists and these credentials may read it; else :class:`ConfigError`."""
        bucket = self.root.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as exc:
            raise explain(exc, self.url) from exc
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(
                f"{self.url}: the bucket {bucket!r} does not exist{_where()}; create it "
                f"(e.g. aws s3 mb s3://{bucket}) or fix the URL")


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _where() -> str:
    endpoint = _endpoint()
    return f" at {endpoint} (AWS_ENDPOINT_URL)" if endpoint else ""


def s3_options(bucket: str) -> dict[str, object]:
    """``S3FileSystem`` arguments from the standard AWS environment variables.

    pyarrow's own ``from_uri`` reads ``AWS_ENDPOINT_URL`` but its ``S3FileSystem`` does not,
    so the endpoint is set here (``endpoint_override`` and ``scheme`` from the URL);
    credentials are left to the AWS SDK's default chain, which reads the environment.
    """
    options: dict[str, object] = {
        # Every object a multipart upload completed only after all its parts succeeded, the
        # parts sent in the background (module docstring).
        "allow_delayed_open": False,
        "background_writes": True,
    }
    endpoint = _endpoint()
    if endpoint:
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"AWS_ENDPOINT_URL {endpoint!r} is not an http:// or https:// URL of an S3 "
                "server; e.g. AWS_ENDPOINT_URL=http://127.0.0.1:9000")
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and endpoint:
        region = "us-east-1"  # S3-compatible servers take any; the SDK wants one
    if not region:
        try:
            region = pafs.resolve_s3_region(bucket)
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(
                f"cannot find the region of bucket {bucket!r} ({exc}); set AWS_REGION (and, "
                "for an S3-compatible server, AWS_ENDPOINT_URL)") from exc
    options["region"] = region
    return options


def explain(exc: OSError, url: str) -> ConfigError:
    """What to set, for an error of a first request to a remote store."""
    text = str(exc)
    if any(marker in text for marker in _CREDENTIAL_ERRORS):
        found = [v for v in _CREDENTIAL_VARIABLES if os.environ.get(v)]
        have = (f"the credentials found ({', '.join(found)}) were refused" if found else
                "no credentials are set in the environment")
        return ConfigError(
            f"{url}: access denied ({text}); {have}. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE, "
            "or run with a role that may read and write the bucket")
    if any(marker in text for marker in _NETWORK_ERRORS):
        return ConfigError(
            f"{url}: cannot reach the object store{_where()}: {text}; check AWS_ENDPOINT_URL "
            "(for an S3-compatible server, e.g. http://127.0.0.1:9000) and the network")
    return ConfigError(f"{url}: {text}; check the URL and the AWS_* settings")


def _fsspec_store(url: str, scheme: str) -> ArrowStore:
    """A store through fsspec, for a scheme pyarrow does not know (when fsspec is installed)."""
    try:
        fsspec = importlib.import_module("fsspec")
    except ImportError:
        raise ConfigError(
            f"object store {url!r}: scheme {scheme!r} is not one pyarrow knows (s3, gs, abfs, "
            "hdfs) and fsspec is not installed; pip install fsspec and its backend, or use "
            "s3://") from None
    try:
        handler = pafs.FSSpecHandler(fsspec.filesystem(scheme))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"object store {url!r}: {exc}") from exc
    return ArrowStore(pafs.PyFileSystem(handler), url.split("://", 1)[1], url)


def open_remote(url: str) -> ArrowStore:
    """The checked store at ``url`` (``scheme://bucket/prefix``)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        parts = urlsplit(url)
        if parts.query or parts.username:
            raise ConfigError(
                f"object store {url!r}: give the settings in the environment (AWS_REGION, "
                "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...), not in the URL")
        bucket = parts.netloc
        fs = pafs.S3FileSystem(**s3_options(bucket))
        store = ArrowStore(fs, f"{bucket}/{parts.path.strip('/')}", url)
    else:
        try:
            fs, root = pafs.FileSystem.from_uri(url)
        except pa.ArrowInvalid as exc:
            if "Unrecognized filesystem type" not in str(exc):
                raise ConfigError(f"object store {url!r}: {exc}") from exc
            store = _fsspec_store(url, scheme)
        except OSError as exc:
            raise explain(exc, url) from exc
        else:
            store = ArrowStore(fs, root, url)
    store.check()
    return store
