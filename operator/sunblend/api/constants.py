"""Names the API fixes: group, version, kind, labels and condition types.

Every other layer takes these names from here, so a rename happens in one place.
"""

from typing import Final

GROUP: Final = "sunblend.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferencePool"
LIST_KIND: Final = "InferencePoolList"
PLURAL: Final = "inferencepools"
SINGULAR: Final = "inferencepool"
# Never "infpool": the Gateway API Inference Extension uses it for its own InferencePool.
SHORT_NAMES: Final = ("sbpool",)
CATEGORIES: Final = ("sunblend", "gpu")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

REGION_LABEL: Final = "topology.kubernetes.io/region"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"

CONDITION_READY: Final = "Ready"
CONDITION_PLANNED: Final = "Planned"
CONDITION_CAPACITY_AVAILABLE: Final = "CapacityAvailable"
CONDITION_METRICS_AVAILABLE: Final = "MetricsAvailable"
