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
