"""Parses an InferencePool document and checks it with the CRD's rules, naming the field at fault.

Used by ``sunblend plan`` on YAML files and by the operator on objects from the API server, so a
pool is judged the same way everywhere. Errors are ``InvalidPool`` values, never tracebacks.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import yaml

from sunblend.api import constants, rules, spec


@dataclass(frozen=True)
class FieldError:
    """One problem, at one field path such as ``spec.regions[0].timeZone``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidPool(Exception):
    """The pool document breaks the schema or a rule; ``errors`` names each field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_errors(error: pydantic.ValidationError, prefix: tuple[str, ...]) -> list[FieldError]:
    found = []
    for item in error.errors():
        loc = prefix + tuple(item["loc"])
        message = item["msg"]
        if item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        found.append(FieldError(_path(loc), message))
    return found


def _duplicates(names: list[str], path: str) -> Iterator[FieldError]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield FieldError(f"{path}[{index}].name", f"duplicate name {name!r}")
        seen.add(name)


def rule_errors(pool_spec: spec.InferencePoolSpec) -> list[FieldError]:
    """Every rule the CRD enforces with CEL or list keys, plus what CEL cannot check (time zones)."""
    errors: list[FieldError] = []
    region_names = [r.name for r in pool_spec.regions]
    class_names = [g.name for g in pool_spec.gpu_classes]
    errors += _duplicates(region_names, "spec.regions")
    errors += _duplicates(class_names, "spec.gpuClasses")
    for i, region in enumerate(pool_spec.regions):
        try:
            zoneinfo.ZoneInfo(region.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errors.append(FieldError(f"spec.regions[{i}].timeZone", f"unknown IANA time zone {region.time_zone!r}"))
        demand = region.demand
        if demand.peak_tokens_per_second < demand.baseline_tokens_per_second:
            errors.append(
                FieldError(f"spec.regions[{i}].demand.peakTokensPerSecond", rules.PEAK_AT_LEAST_BASELINE.message)
            )
        if demand.busy_hours.start == demand.busy_hours.end:
            errors.append(FieldError(f"spec.regions[{i}].demand.busyHours", rules.BUSY_HOURS_DIFFER.message))
    server = pool_spec.model_server
    if server.workload_ref is not None and server.template is not None:
        errors.append(FieldError("spec.modelServer", rules.ONE_WORKLOAD_SOURCE.message))
    if server.workload_refs and (server.workload_ref is not None or server.template is not None):
        errors.append(FieldError("spec.modelServer", rules.ONE_WORKLOAD_SOURCE_PER_REGION.message))
    for i, ref in enumerate(server.workload_refs):
        if ref.region not in region_names:
            errors.append(
                FieldError(
                    f"spec.modelServer.workloadRefs[{i}].region",
                    f"{rules.WORKLOAD_REGIONS_DECLARED.message}; {ref.region!r} is not one",
                )
            )
    seen: set[str] = set()
    for i, ref in enumerate(server.workload_refs):
        if ref.region in seen:
            errors.append(FieldError(f"spec.modelServer.workloadRefs[{i}].region", f"duplicate region {ref.region!r}"))
        seen.add(ref.region)
    for i, commitment in enumerate(pool_spec.commitments):
        if commitment.region not in region_names:
            errors.append(
                FieldError(
                    f"spec.commitments[{i}].region",
                    f"{rules.COMMITMENT_REGION_DECLARED.message}; {commitment.region!r} is not one",
                )
            )
        if commitment.gpu_class not in class_names:
            errors.append(
                FieldError(
                    f"spec.commitments[{i}].gpuClass",
                    f"{rules.COMMITMENT_CLASS_DECLARED.message}; {commitment.gpu_class!r} is not one",
                )
            )
    for i, latency in enumerate(pool_spec.policy.routing.latencies):
        for end, name in (("from", latency.from_region), ("to", latency.to_region)):
            if name not in region_names:
                errors.append(
                    FieldError(
                        f"spec.policy.routing.latencies[{i}].{end}",
                        f"{rules.LATENCY_REGIONS_DECLARED.message}; {name!r} is not one",
                    )
                )
    for i, gpu_class in enumerate(pool_spec.gpu_classes):
        named = [(f"regions[{j}]", n) for j, n in enumerate(gpu_class.regions)]
        named += [(f"regionPrices[{j}].region", p.region) for j, p in enumerate(gpu_class.region_prices)]
        for where, name in named:
            if name not in region_names:
                errors.append(
                    FieldError(
                        f"spec.gpuClasses[{i}].{where}",
                        f"{rules.CLASS_REGIONS_DECLARED.message}; {name!r} is not one",
                    )
                )
        if gpu_class.gpus_per_node < server.gpus_per_replica:
            errors.append(FieldError(f"spec.gpuClasses[{i}].gpusPerNode", rules.REPLICA_FITS_NODE.message))
    return errors


def parse_spec(document: Any, path_prefix: tuple[str, ...] = ("spec",)) -> spec.InferencePoolSpec:
    """Validate a spec mapping; raise ``InvalidPool`` naming every field at fault."""
    if not isinstance(document, Mapping):
        raise InvalidPool([FieldError(_path(path_prefix), "must be a mapping")])
    try:
        pool_spec = spec.InferencePoolSpec.model_validate(document)
    except pydantic.ValidationError as error:
        raise InvalidPool(_schema_errors(error, path_prefix)) from None
    errors = rule_errors(pool_spec)
    if errors:
        raise InvalidPool(errors)
    return pool_spec


def parse_pool(document: Any) -> spec.InferencePool:
    """Validate a whole InferencePool object (apiVersion, kind, metadata, spec)."""
    if not isinstance(document, Mapping):
        raise InvalidPool([FieldError("(document)", "must be a mapping, an InferencePool object")])
    errors = []
    if document.get("apiVersion") != constants.API_VERSION:
        errors.append(FieldError("apiVersion", f"must be {constants.API_VERSION}"))
    if document.get("kind") != constants.KIND:
        errors.append(FieldError("kind", f"must be {constants.KIND}"))
    if "spec" not in document:
        errors.append(FieldError("spec", "required field is missing"))
    if errors:
        raise InvalidPool(errors)
    pool_spec = parse_spec(document["spec"])
    metadata = document.get("metadata") or {}
    try:
        meta = spec.ObjectMeta.model_validate(metadata)
    except pydantic.ValidationError as error:
        raise InvalidPool(_schema_errors(error, ("metadata",))) from None
    return spec.InferencePool(api_version=constants.API_VERSION, kind=constants.KIND, metadata=meta, spec=pool_spec)


def load_text(text: str) -> spec.InferencePool:
    """Parse YAML text holding one InferencePool."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidPool([FieldError("(yaml)", f"not valid YAML: {error}")]) from None
    return parse_pool(document)
