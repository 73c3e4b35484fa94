"""Generates the InferencePool CustomResourceDefinition from the pydantic models.

``sunblend crd`` prints it; ``crds/`` and the Helm chart hold the generated file, and a test
fails when either drifts from the models. The pydantic JSON schema is rewritten into a
Kubernetes structural schema: references inlined, optionals made nullable, titles dropped.
"""

from __future__ import annotations

from typing import Any

import pydantic
import yaml

from sunblend.api import constants, spec, status

_DROP = {"title", "$defs"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` (or a one-element ``allOf``), keeping sibling keywords."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node and len(node["allOf"]) == 1:
        return {**_resolve(node["allOf"][0], defs), **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-schema node as a structural OpenAPI v3 schema node."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        choices = [c for c in node["anyOf"] if c.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(choices) != 1:
            raise ValueError(f"cannot express a union of {len(choices)} types structurally")
        node = {**_resolve(choices[0], defs), **rest}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
        required = set(out.get("required", []))
        for name, child in out["properties"].items():
            # An optional object whose own fields all have defaults gets a default too, so the
            # API server fills in its fields when it is left out.
            optional_object = child.get("type") == "object" and "properties" in child and name not in required
            if optional_object and not child.get("required") and "default" not in child:
                child["default"] = _filled_default(child)
            # Optional lists default to empty (pydantic omits factory defaults), so CEL rules
            # can read them without has().
            if child.get("type") == "array" and name not in required and "default" not in child:
                child["default"] = []
    return out


def _filled_default(node: dict[str, Any]) -> dict[str, Any]:
    """The default of an object whose fields all have defaults, spelled out in full.

    The API server checks a default against the object's CEL rules without first filling in
    the nested defaults, so ``default: {}`` would fail a rule that reads a defaulted field.
    """
    return {name: child["default"] for name, child in node.get("properties", {}).items() if "default" in child}


def schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural schema of a pydantic model, by alias."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _status_schema() -> dict[str, Any]:
    schema = schema_of(status.InferencePoolStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Hour$",
            "type": "number",
            "jsonPath": ".status.costDollarsPerHour",
            "description": "Planned cost this hour, dollars, committed (amortised) included.",
        },
        {
            "name": "HourSavings%",
            "type": "number",
            "jsonPath": ".status.savingsPercent",
            "description": "This hour's savings versus serving the same demand all on-demand.",
        },
        {
            "name": "HorizonSavings%",
            "type": "number",
            "jsonPath": ".status.horizonSavingsPercent",
            "description": "Savings over the planning horizon versus all on-demand.",
        },
        {
            "name": "Spot%",
            "type": "number",
            "jsonPath": ".status.spotPercent",
            "description": "Share of planned GPUs on spot.",
        },
        {
            "name": "CommitSave$/mo",
            "type": "number",
            "priority": 1,
            "jsonPath": ".status.commitmentAdvice.savingOverHeldDollarsPerMonth",
            "description": "What buying the advised commitments would save per month over those held.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": constants.CRD_NAME},
        "spec": {
            "group": constants.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": constants.KIND,
                "listKind": constants.LIST_KIND,
                "plural": constants.PLURAL,
                "singular": constants.SINGULAR,
                "shortNames": list(constants.SHORT_NAMES),
                "categories": list(constants.CATEGORIES),
            },
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A pool of LLM inference replicas planned across regions, "
                            "GPU classes and capacity types.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": schema_of(spec.InferencePoolSpec),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes shared values out in full: no YAML anchors or aliases in a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    """The CRD as YAML text, exactly as committed under ``crds/``."""
    header = "# Generated by `sunblend crd` from operator/sunblend/api. Do not edit by hand.\n"
    return header + yaml.dump(build(), Dumper=_PlainDumper, sort_keys=False, width=100)
