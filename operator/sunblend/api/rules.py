"""Rules across fields, written once as CEL for the API server, with the messages both sides use.

``api.spec`` attaches them to the CRD schema; ``api.load`` checks the same rules in Python
(for ``sunblend plan`` and the operator), reporting the same messages with a field path.
List limits live here too: CEL cost estimation needs every list to be bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_REGIONS = 16
MAX_GPU_CLASSES = 16
MAX_COMMITMENTS = 64
MAX_LATENCIES = 256


@dataclass(frozen=True)
class Rule:
    """One CEL validation: the expression, the message shown on failure, and the field blamed."""

    cel: str
    message: str
    field_path: str | None = None

    def as_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


PEAK_AT_LEAST_BASELINE = Rule(
    "self.peakTokensPerSecond >= self.baselineTokensPerSecond",
    "peakTokensPerSecond must be at least baselineTokensPerSecond",
    ".peakTokensPerSecond",
)
BUSY_HOURS_DIFFER = Rule(
    "self.start != self.end",
    "busyHours start and end must differ",
)
ONE_WORKLOAD_SOURCE = Rule(
    "!(has(self.workloadRef) && has(self.template))",
    "set workloadRef or template, not both",
)
ONE_WORKLOAD_SOURCE_PER_REGION = Rule(
    "size(self.workloadRefs) == 0 || !(has(self.workloadRef) || has(self.template))",
    "set workloadRefs (one per region), workloadRef or template: only one of them",
)
WORKLOAD_REGIONS_DECLARED = Rule(
    "self.modelServer.workloadRefs.all(w, self.regions.exists(r, r.name == w.region))",
    "every workloadRefs entry must name a declared region",
    ".modelServer",
)
COMMITMENT_REGION_DECLARED = Rule(
    "self.commitments.all(c, self.regions.exists(r, r.name == c.region))",
    "every commitment must name a declared region",
    ".commitments",
)
COMMITMENT_CLASS_DECLARED = Rule(
    "self.commitments.all(c, self.gpuClasses.exists(g, g.name == c.gpuClass))",
    "every commitment must name a declared GPU class",
    ".commitments",
)
LATENCY_REGIONS_DECLARED = Rule(
    "self.policy.routing.latencies.all(l, self.regions.exists(r, r.name == l.from)"
    " && self.regions.exists(r, r.name == l.to))",
    "every latency entry must name declared regions",
    ".policy",
)
CLASS_REGIONS_DECLARED = Rule(
    "self.gpuClasses.all(g, g.regions.all(n, self.regions.exists(r, r.name == n))"
    " && g.regionPrices.all(p, self.regions.exists(r, r.name == p.region)))",
    "GPU class regions and regionPrices must name declared regions",
    ".gpuClasses",
)
COMMITMENT_NEEDS_PRICE = "a held commitment needs its price"
# A region's regionPrices entry gives the committed price there, or leaves it to the class's prices.
COMMITMENT_PRICED = Rule(
    "self.commitments.all(c, self.gpuClasses.all(g, g.name != c.gpuClass || has(g.prices.committed)"
    " || g.regionPrices.exists(p, p.region == c.region && has(p.committed))))",
    f"{COMMITMENT_NEEDS_PRICE}: a committed price in its region",
    ".commitments",
)
REPLICA_FITS_NODE = Rule(
    "self.gpuClasses.all(g, g.gpusPerNode >= self.modelServer.gpusPerReplica)",
    "every GPU class must have gpusPerNode of at least modelServer.gpusPerReplica",
    ".gpuClasses",
)

DEMAND = (PEAK_AT_LEAST_BASELINE,)
BUSY_HOURS = (BUSY_HOURS_DIFFER,)
MODEL_SERVER = (ONE_WORKLOAD_SOURCE, ONE_WORKLOAD_SOURCE_PER_REGION)
SPEC = (
    WORKLOAD_REGIONS_DECLARED,
    COMMITMENT_REGION_DECLARED,
    COMMITMENT_CLASS_DECLARED,
    COMMITMENT_PRICED,
    LATENCY_REGIONS_DECLARED,
    CLASS_REGIONS_DECLARED,
    REPLICA_FITS_NODE,
)


def schema_extra(rules: tuple[Rule, ...]) -> dict[str, Any]:
    """JSON-schema extras that carry ``rules`` into the CRD."""
    return {"x-kubernetes-validations": [rule.as_schema() for rule in rules]}
