"""Where files outside the worker's host live: :class:`ObjectStore`, local or remote.

Snapshots (Parquet) and durable state checkpoints are written to a store named by a local
path or an object-store URL (``s3://bucket/prefix``; contract section 11). Every store
writes an object whole or not at all: a reader never sees half an object.

Owns: the :class:`ObjectStore` protocol, :func:`open_store`, the local store
(:class:`LocalStore`: temporary file, fsync, rename) and the URL stores (:class:`ArrowStore`
over pyarrow's filesystems: S3 with the standard AWS settings, ``AWS_ENDPOINT_URL``
included; a direct upload, completed only when whole). Must not import: anything of
streamfeat but the errors.
"""

from __future__ import annotations

from streamfeat.storage.objects import LocalStore, ObjectStore, open_store
from streamfeat.storage.remote import ArrowStore

__all__ = ["ArrowStore", "LocalStore", "ObjectStore", "open_store"]
