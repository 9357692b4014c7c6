"""Windows and aggregations: pure, mergeable, fast.

:class:`PartitionOperator` runs every feature of one topology on one Kafka
partition (contract sections 2 and 3); the aggregation states are mergeable
and serializable on their own.
"""

from streamfeat.operators.aggregations import (
    TOP_K_MAX_VALUES,
    AggState,
    Distinct,
    Ends,
    Family,
    Frequencies,
    Moments,
    Quantiles,
    Recent,
    family_of,
    new_state,
)
from streamfeat.operators.eventtime import late_mask
from streamfeat.operators.partition import (
    EMPTY_STATE,
    STATE_FORMAT_VERSION,
    PartitionOperator,
    ProcessResult,
)
from streamfeat.operators.windows import Span

__all__ = [
    "EMPTY_STATE",
    "STATE_FORMAT_VERSION",
    "TOP_K_MAX_VALUES",
    "AggState",
    "Distinct",
    "Ends",
    "Family",
    "Frequencies",
    "Moments",
    "PartitionOperator",
    "ProcessResult",
    "Quantiles",
    "Recent",
    "Span",
    "family_of",
    "late_mask",
    "new_state",
]
