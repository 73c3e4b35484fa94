"""Parses an InferencePool document and checks it with the CRD's rules, naming the field at fault.

Used by ``sunblend plan`` on YAML files and by the operator on objects from the API server, so a
pool is judged the same way everywhere. Errors are ``InvalidPool`` values, never tracebacks.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import yaml

from sunblend.api import constants, rules, spec

MAX_DOCUMENT_CHARS = 1024 * 1024
"""A pool is a Kubernetes object, and those are at most about 1.5 MB; 1 MiB of YAML is plenty."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings; a pod template needs about 15 levels."""
MAX_NODES = 100_000
"""Most YAML nodes a document may hold once its aliases are expanded (a billion laughs has 10^9)."""


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


def _kind(value: Any) -> str:
    """What a wrongly typed value is, in words a YAML author recognises."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})" + ("; write numbers without quotes" if _numeric(value) else "")
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _message(item: Any) -> str:
    """pydantic's message for one error, reworded where it is unclear."""
    kind, value = item["type"], item.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "float_type":
        return f"must be a number, not {_kind(value)}"
    if kind == "int_type":
        return f"must be an integer, not {_kind(value)}"
    if kind == "finite_number":
        not_finite = "NaN" if isinstance(value, float) and math.isnan(value) else "infinity"
        return f"must be a finite number, not {not_finite}"
    return str(item["msg"])


def _schema_errors(error: pydantic.ValidationError, prefix: tuple[str, ...]) -> list[FieldError]:
    return [FieldError(_path(prefix + tuple(item["loc"])), _message(item)) for item in error.errors()]


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
        elif commitment.region in region_names:
            prices = pool_spec.prices(pool_spec.gpu_class(commitment.gpu_class), commitment.region)
            if prices.committed is None:
                errors.append(
                    FieldError(
                        f"spec.commitments[{i}]",
                        f"{rules.COMMITMENT_NEEDS_PRICE}: gpuClass {commitment.gpu_class!r}"
                        f" has no committed price in region {commitment.region!r}",
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


class _TooLarge(yaml.YAMLError):
    """The document nests too deeply or expands to too many nodes."""


class _PoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded in nesting depth, reading YAML 1.2 numbers such as 1e3.

    Kubernetes reads ``1e3`` as a number; PyYAML's YAML 1.1 rules read it as a string, which
    the spec's strict numbers would then refuse.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooLarge(f"nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_PoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_expanded(root: yaml.Node) -> None:
    """Refuse a node graph that expands, through aliases, past ``MAX_NODES`` or ``MAX_DEPTH``, or loops.

    Walks the graph without recursion, counting each shared node once per use.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise _TooLarge(f"expands to more than {MAX_NODES} nodes through its aliases")
            if depth[key] > MAX_DEPTH:
                raise _TooLarge(f"nests deeper than {MAX_DEPTH} levels through its aliases")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _TooLarge("refers to itself through an alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def parse_yaml(text: str) -> Any:
    """One YAML document as Python values; hostile input raises ``InvalidPool``, never a traceback."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidPool([FieldError("(yaml)", f"document is longer than {MAX_DOCUMENT_CHARS} characters")])
    loader = _PoolLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expanded(root)
        return loader.construct_document(root)
    except _TooLarge as error:
        raise InvalidPool([FieldError("(yaml)", f"document {error}")]) from None
    except yaml.YAMLError as error:
        raise InvalidPool([FieldError("(yaml)", f"not valid YAML: {error}")]) from None
    except (ValueError, TypeError, OverflowError) as error:  # a constructor's, e.g. a date 2024-13-45
        raise InvalidPool([FieldError("(yaml)", f"not valid YAML: {error}")]) from None
    except RecursionError:  # not expected below MAX_DEPTH; a last guard
        raise InvalidPool([FieldError("(yaml)", "document nests too deeply")]) from None
    finally:
        loader.dispose()


def load_text(text: str) -> spec.InferencePool:
    """Parse YAML text holding one InferencePool."""
    return parse_pool(parse_yaml(text))
