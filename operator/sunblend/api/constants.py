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

# Labels and annotations on what sunblend creates (slices, their PDBs) and reads (nodes, pods).
POOL_LABEL: Final = "sunblend.dev/pool"
SLICE_LABEL: Final = "sunblend.dev/slice"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "sunblend"
CAPACITY_TYPE_LABEL: Final = "sunblend.dev/capacity-type"
GPU_CLASS_LABEL: Final = "sunblend.dev/gpu-class"
GPU_RESOURCE: Final = "nvidia.com/gpu"
DO_NOT_DISRUPT_ANNOTATION: Final = "karpenter.sh/do-not-disrupt"
SAFE_TO_EVICT_ANNOTATION: Final = "cluster-autoscaler.kubernetes.io/safe-to-evict"

# Taints that spot nodes carry on some providers; spot slices tolerate them.
SPOT_TAINTS: Final = (
    ("kubernetes.azure.com/scalesetpriority", "spot"),
    ("cloud.google.com/gke-spot", "true"),
)

CONDITION_ACTING: Final = "Acting"
CONDITION_DRAIN_BLOCKED: Final = "DrainBlocked"

# Event reasons of the decision engine and the actuator.
REASON_SPOT_INTERRUPTED: Final = "SpotInterrupted"
REASON_FELL_BACK_TO_ON_DEMAND: Final = "FellBackToOnDemand"
REASON_RETURNED_TO_SPOT: Final = "ReturnedToSpot"
REASON_SPOT_UNAVAILABLE: Final = "SpotUnavailable"
REASON_SCALED: Final = "Scaled"
REASON_DRAINING: Final = "Draining"
REASON_DRAIN_BLOCKED: Final = "DrainBlocked"
REASON_ADVISORY: Final = "Advisory"
REASON_ENFORCING: Final = "Enforcing"
REASON_OWNED_BY_AUTOSCALER: Final = "OwnedByAutoscaler"
REASON_STALE_COMMAND: Final = "StaleCommand"
REASON_ACTUATION_FAILED: Final = "ActuationFailed"
REASON_THROUGHPUT_DIFFERS: Final = "ThroughputDiffers"
REASON_ROUTES_PUBLISHED: Final = "RoutesPublished"
REASON_COMMITMENT_ADVISED: Final = "CommitmentAdvised"
REASON_COMMITMENT_ADVICE_FAILED: Final = "CommitmentAdviceFailed"

# The kwok node provider: nodes it made, and the taint that holds pods off until a node has "booted".
PROVIDER_LABEL: Final = "sunblend.dev/provider"
POOL_NAMESPACE_LABEL: Final = "sunblend.dev/pool-namespace"
PROVISIONING_TAINT: Final = "sunblend.dev/provisioning"
READY_AT_ANNOTATION: Final = "sunblend.dev/ready-at"
