"""Prints kwok fake GPU nodes as a YAML list.

    python hack/kwok_nodes.py [--label K=V] [--prefix P] REGION:CAPACITY:COUNT ...

Each node is an 8x H100 p5.48xlarge with the labels sunblend reads (region, capacity type,
instance type, GPU product) and the annotation kwok manages. Used by `make demo`.
"""

from __future__ import annotations

import argparse
import sys

import yaml


def node(region: str, capacity_type: str, index: int, name: str | None = None) -> dict:
    """One fake 8x H100 node; ``name`` defaults to gpu-REGION-CAPACITY-INDEX."""
    name = name or f"gpu-{region}-{capacity_type}-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/role": "agent",
                "type": "kwok",
                "sunblend.dev/demo": "true",
                "topology.kubernetes.io/region": region,
                "karpenter.sh/capacity-type": capacity_type,
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": "8",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "capacity": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"},
        },
    }


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(description="kwok fake GPU nodes as a YAML list")
    parser.add_argument("--label", action="append", default=[], help="an extra node label, K=V (repeatable)")
    parser.add_argument("--prefix", default="gpu", help="node names start with this (gpu)")
    parser.add_argument("specs", nargs="+", help="REGION:CAPACITY:COUNT")
    options = parser.parse_args(args)
    extra = dict(text.split("=", 1) for text in options.label)
    items = []
    for text in options.specs:
        region, capacity_type, count = text.split(":")
        for i in range(int(count)):
            item = node(region, capacity_type, i, name=f"{options.prefix}-{region}-{capacity_type}-{i}")
            item["metadata"]["labels"].update(extra)
            items.append(item)
    print(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False))


if __name__ == "__main__":
    main(sys.argv[1:])
