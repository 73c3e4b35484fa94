"""A ``Plan`` as a plain document (dicts, lists, numbers) for ``-o json`` and ``-o yaml``.

Keys are camelCase, as in the Kubernetes API; times are RFC 3339 in UTC.
"""

from __future__ import annotations

from typing import Any

from sunblend.core.plan import Plan


def _money(value: float) -> float:
    return round(value, 4)


def plan_document(plan: Plan, pool: str = "") -> dict[str, Any]:
    """Everything in ``plan`` that a reader needs, machine-readable."""
    per_million = plan.dollars_per_million_tokens
    return {
        "pool": pool,
        "status": plan.status.value,
        "solver": plan.solver,
        "message": plan.message,
        "mipGap": plan.mip_gap,
        "solveSeconds": round(plan.solve_seconds, 4),
        "start": plan.hours[0].isoformat() if plan.hours else None,
        "lowerBoundDollars": None if plan.lower_bound_dollars is None else _money(plan.lower_bound_dollars),
        "notes": list(plan.notes),
        "thisHour": {
            "costDollars": _money(plan.cost_dollars_per_hour),
            "allOnDemandDollars": _money(plan.all_on_demand_dollars_per_hour),
            "savingsRatio": round(plan.savings_ratio_this_hour, 4),
        },
        "horizon": {
            "hours": len(plan.hours),
            "costDollars": _money(plan.total_dollars),
            "allOnDemandDollars": _money(plan.total_all_on_demand_dollars),
            "savingsRatio": round(plan.savings_ratio, 4),
        },
        "spotRatio": round(plan.spot_ratio, 4),
        "dollarsPerMillionTokens": None if per_million is None else _money(per_million),
        "binding": list(plan.binding),
        "marginals": [
            {"subject": m.subject, "dollarsPerHour": _money(m.dollars_per_hour), "unit": m.unit} for m in plan.marginals
        ],
        "commitmentAdvice": [
            {
                "gpuClass": c.gpu_class,
                "region": c.region,
                "heldGpus": c.held_gpus,
                "recommendedGpus": c.recommended_gpus,
            }
            for c in plan.commitment_advice
        ],
        "savingsFromSizingDollars": plan.savings_from_sizing_dollars,
        "hours": [
            {
                "hour": h.hour,
                "start": h.start.isoformat(),
                "demandTokensPerSecond": h.demand_tokens_per_second,
                "costDollars": _money(h.dollars),
                "committedDollars": _money(h.committed_dollars),
                "spotDollars": _money(h.spot_dollars),
                "onDemandDollars": _money(h.on_demand_dollars),
                "allOnDemandDollars": _money(h.all_on_demand_dollars),
            }
            for h in plan.hour_costs
        ],
        "allocations": [
            {
                "hour": a.hour,
                "region": a.region,
                "gpuClass": a.gpu_class,
                "capacityType": a.capacity_type.value,
                "nodes": a.nodes,
                "gpus": a.gpus,
                "replicas": a.replicas,
                "dollarsPerHour": _money(a.dollars_per_hour),
            }
            for a in plan.allocations
        ],
        "routes": [
            {"hour": f.hour, "from": f.from_region, "to": f.to_region, "tokensPerSecond": round(f.tokens_per_second, 3)}
            for f in plan.flows
        ],
    }
