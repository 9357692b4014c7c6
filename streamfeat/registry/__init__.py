"""The feature registry: what is deployed, who owns it, what it is made from, who reads it.

Owns ``streamfeat registry`` and the catalog behind it:

- :mod:`~streamfeat.registry.catalog`: one entry per topology and per Redis field (owner,
  entity, source, lineage, definition hash, description, tags, declared models), and the
  lookups of a feature or a topology by name whose errors list what exists;
- :mod:`~streamfeat.registry.versions`: a deployed version's document, its digests, and the
  difference between two versions (the worker's rule for fields);
- :mod:`~streamfeat.registry.shared`: the catalog every worker records its topologies' versions
  in at start, in Redis beside the features, and every host reads;
- :mod:`~streamfeat.registry.usage`: which model reads which features, counted in memory by
  the readers (:class:`~streamfeat.client.Client`, ``streamfeat serve``) and flushed in
  batches;
- :mod:`~streamfeat.registry.lineage`: a training set's topology version and snapshot range,
  in its Parquet metadata;
- :mod:`~streamfeat.registry.query`: filters and the join of entries with model reads;
  :mod:`~streamfeat.registry.render`: tables and JSON (imported on its own: rich stays out of
  the readers);
- :mod:`~streamfeat.registry.marks`: the partial-history marks of definition changes.

May import: topology, pipeline (the keying of a topology and the definition-change rule),
sinks (Redis helpers), snapshot (the files a training set read), connections, errors,
redact. Must not import the runtime, replay, monitoring, the client, serving or the CLI: it
sits below them, so the client and the feature server can record model reads and the worker
and ``plan`` can use the catalog. :mod:`~streamfeat.registry.usage`, which the readers
import, itself imports no pipeline.
"""

from __future__ import annotations

import typing

from streamfeat.lazy import exports as _exports

if typing.TYPE_CHECKING:
    from streamfeat.registry.catalog import (
        check_features,
        feature_entries,
        find_topology,
        path_of,
        select,
        topology_entries,
    )
    from streamfeat.registry.lineage import (
        LINEAGE_KEY,
        read_lineage,
        served_by,
        training_lineage,
        with_lineage,
    )
    from streamfeat.registry.marks import partial_marks
    from streamfeat.registry.query import (
        Filters,
        deployed_entries,
        filter_entries,
        model_rows,
        models_by_field,
        models_reading,
    )
    from streamfeat.registry.shared import (
        TOPOLOGY_SET,
        Deployment,
        SharedCatalog,
        TopologyHistory,
        catalog_key,
        record_deployments,
    )
    from streamfeat.registry.usage import (
        FLUSH_EVERY_S,
        READ_SET,
        ModelRead,
        UsageRecorder,
        check_model,
        usage_key,
    )
    from streamfeat.registry.versions import (
        change_summary,
        definition_digest,
        diff_versions,
        document_digest,
        field_versions,
        version_document,
    )

# Imported on first use: the readers (the client, the feature server) import
# :mod:`~streamfeat.registry.usage` alone, without the catalog's pipeline and Arrow.
__getattr__, __dir__ = _exports(__name__, {
    "Deployment": "streamfeat.registry.shared",
    "FLUSH_EVERY_S": "streamfeat.registry.usage",
    "Filters": "streamfeat.registry.query",
    "LINEAGE_KEY": "streamfeat.registry.lineage",
    "ModelRead": "streamfeat.registry.usage",
    "READ_SET": "streamfeat.registry.usage",
    "SharedCatalog": "streamfeat.registry.shared",
    "TOPOLOGY_SET": "streamfeat.registry.shared",
    "TopologyHistory": "streamfeat.registry.shared",
    "UsageRecorder": "streamfeat.registry.usage",
    "catalog_key": "streamfeat.registry.shared",
    "change_summary": "streamfeat.registry.versions",
    "check_features": "streamfeat.registry.catalog",
    "check_model": "streamfeat.registry.usage",
    "definition_digest": "streamfeat.registry.versions",
    "deployed_entries": "streamfeat.registry.query",
    "diff_versions": "streamfeat.registry.versions",
    "document_digest": "streamfeat.registry.versions",
    "feature_entries": "streamfeat.registry.catalog",
    "field_versions": "streamfeat.registry.versions",
    "filter_entries": "streamfeat.registry.query",
    "find_topology": "streamfeat.registry.catalog",
    "model_rows": "streamfeat.registry.query",
    "models_by_field": "streamfeat.registry.query",
    "models_reading": "streamfeat.registry.query",
    "partial_marks": "streamfeat.registry.marks",
    "path_of": "streamfeat.registry.catalog",
    "read_lineage": "streamfeat.registry.lineage",
    "record_deployments": "streamfeat.registry.shared",
    "select": "streamfeat.registry.catalog",
    "served_by": "streamfeat.registry.lineage",
    "topology_entries": "streamfeat.registry.catalog",
    "training_lineage": "streamfeat.registry.lineage",
    "usage_key": "streamfeat.registry.usage",
    "version_document": "streamfeat.registry.versions",
    "with_lineage": "streamfeat.registry.lineage",
})

__all__ = [
    "FLUSH_EVERY_S",
    "LINEAGE_KEY",
    "READ_SET",
    "TOPOLOGY_SET",
    "Deployment",
    "Filters",
    "ModelRead",
    "SharedCatalog",
    "TopologyHistory",
    "UsageRecorder",
    "catalog_key",
    "change_summary",
    "check_features",
    "check_model",
    "definition_digest",
    "deployed_entries",
    "diff_versions",
    "document_digest",
    "feature_entries",
    "field_versions",
    "filter_entries",
    "find_topology",
    "model_rows",
    "models_by_field",
    "models_reading",
    "partial_marks",
    "path_of",
    "read_lineage",
    "record_deployments",
    "select",
    "served_by",
    "topology_entries",
    "training_lineage",
    "usage_key",
    "version_document",
    "with_lineage",
]
