"""The ``sunblend`` command: ``plan`` a pool from YAML, print the ``crd``.

Bad input ends with a message naming the field and exit code 2, never a traceback. With ``-o json``
or ``-o yaml`` stdout carries only the document (the solver's banner goes to stderr); tables piped
to a file or a script keep every figure whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

import sunblend
from sunblend.api import crd, load
from sunblend.api.spec import ActuationMode, NodeProviderName, PlanningMode
from sunblend.core import blend, problem
from sunblend.present import document, table

EXIT_INVALID = 2


class UsageError(Exception):
    """The command line or an input file is wrong; the message says how."""


def _parse_time(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: {text!r} is not an ISO 8601 time, e.g. 2026-11-22T14:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _check_horizon(start: dt.datetime, hours: int, flag: str, text: str) -> None:
    """Refuse a start whose planning horizon, with a day to spare for time zones, leaves the calendar."""
    try:
        start - dt.timedelta(days=1)
        start + dt.timedelta(hours=hours, days=1)
    except OverflowError:
        raise UsageError(
            f"{flag}: {text!r} is out of range: the {hours} h planning horizon, a day either side,"
            " must fit within years 1 to 9999"
        ) from None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror}") from None


def _emit(output: str, document_of: Callable[[], Any], render: Callable[[], object]) -> None:
    """Print the command's result: the document alone as JSON or YAML, or ``render`` it as a table."""
    if output == "json":
        print(json.dumps(document_of(), indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(document_of(), sort_keys=False), end="")
    else:
        render()


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan one pool and print the plan."""
    pool = load.load_text(_read(args.pool))
    now = _parse_time(args.at)
    _check_horizon(now, pool.spec.planning.horizon_hours, "--at", args.at or now.isoformat())
    blend_problem = problem.from_spec(pool.spec, now)
    result = blend.plan(blend_problem)
    name = f"{pool.metadata.namespace}/{pool.metadata.name}"
    _emit(
        args.output,
        lambda: document.plan_document(result, name),
        lambda: table.render(result, name, dict(blend_problem.time_zones), table.console()),
    )
    if args.png:
        from sunblend.present import chart  # matplotlib is slow to import; only when asked

        try:
            chart.draw(result, blend_problem, Path(args.png), f"{name}: {result.status.value}")
        except OSError as error:
            raise UsageError(f"--png: cannot write {args.png}: {error.strerror}") from None
    return 0 if result.keeps_every_constraint else 1


def _duration(text: str, flag: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
        if not 0 <= seconds <= 366 * 86400:
            raise ValueError(seconds)
        return dt.timedelta(seconds=seconds)
    except (KeyError, ValueError, IndexError, OverflowError):
        raise UsageError(f"{flag}: {text!r} is not a duration like 30s, 1m or 1h (at most a year)") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay traces under one policy (or all) and report cost and served demand, beside the hindsight bounds.

    With one policy, json and yaml give its document with the bounds under ``bounds``; with all,
    a list of the policies' documents followed by the bounds' (``kind: bound``).
    """
    from sunblend.sim import engine, policies, traces
    from sunblend.sim import run as sim_run

    pool = load.load_text(_read(args.pool))
    if pool.spec.planning.mode is PlanningMode.SIZE_COMMITMENTS:
        raise UsageError(
            f"{args.pool}: spec.planning.mode is SizeCommitments: simulating it would replay commitments that are "
            "not held. To size commitments from this history, run `sunblend advise commitments "
            f"{args.pool} --demand {args.demand}`, put the advice in spec.commitments, and simulate with "
            "spec.planning.mode: Operate"
        )
    flag = "--demand"
    try:
        demand = traces.read_demand(Path(args.demand), args.tokens_per_request)
        flag = "--spot"
        spot = traces.read_spot(Path(args.spot)) if args.spot else {}
        flag = "--prices"
        prices = traces.read_prices(Path(args.prices)) if args.prices else {}
        replayed = traces.Traces(demand=demand, spot=spot, prices=prices)
        traces.check_against(replayed, [r.name for r in pool.spec.regions], [g.name for g in pool.spec.gpu_classes])
    except traces.TraceError as error:
        raise UsageError(str(error)) from None
    except OverflowError:  # a timestamp whose UTC time leaves the calendar
        raise UsageError(f"{flag}: a timestamp is out of range: times must fall within years 1 to 9999") from None
    for moment in (replayed.start, replayed.end):
        _check_horizon(moment, pool.spec.planning.horizon_hours, "--demand", moment.isoformat())
    settings = engine.Settings(
        step=_duration(args.step, "--step"),
        on_demand_delay=_duration(args.on_demand_delay, "--on-demand-delay"),
        spot_delay=_duration(args.spot_delay, "--spot-delay"),
        preemption_notice=_duration(args.preemption_notice, "--preemption-notice"),
    )
    blend_problem = problem.from_spec(pool.spec, replayed.start, priced_commitments=True)
    replay = engine.Engine(blend_problem, replayed, settings)
    names = list(policies.POLICIES) if args.policy == "all" else [args.policy]
    if args.policy != "all" and args.policy not in policies.POLICIES:
        raise UsageError(f"--policy: {args.policy!r} is not one of all, {', '.join(policies.POLICIES)}")
    results = sim_run.compare(pool.spec, blend_problem, replay, names)
    documents = [doc for _, doc in results]
    hindsight = sim_run.bounds(replay)
    bound_documents = [doc for _, doc in hindsight]
    sim_run.against_hindsight([*documents, *bound_documents], bound_documents)
    one_or_all: object = {**documents[0], "bounds": bound_documents}
    if len(documents) > 1:
        one_or_all = [*documents, *bound_documents]
    _emit(
        args.output,
        lambda: one_or_all,
        lambda: table.render_simulation([*documents, *bound_documents], table.console()),
    )
    if args.png:
        from sunblend.present import chart

        runs = [r for r, d in results if "skipped" not in d]
        hourly = sim_run.hourly_bound(hindsight)
        try:
            chart.draw_simulation(runs, blend_problem, Path(args.png), hourly)
        except OSError as error:
            raise UsageError(f"--png: cannot write {args.png}: {error.strerror}") from None
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the NVML GPU agent: a Prometheus exporter for the node's GPUs."""
    from sunblend.agent import run as agent_run

    return agent_run.serve(args)


def cmd_crd(args: argparse.Namespace) -> int:
    """Print the CRD, or write it to a file."""
    text = crd.render()
    if args.output_file:
        try:
            Path(args.output_file).write_text(text, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"--output-file: cannot write {args.output_file}: {error.strerror}") from None
    else:
        sys.stdout.write(text)
    return 0


def _yaml_documents(text: str) -> list[tuple[int, str]]:
    """The documents of a YAML stream, each with the line it starts on."""
    found: list[tuple[int, str]] = []
    start, lines = 1, list[str]()
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        marker = line.rstrip()
        if marker in ("---", "...") or line.startswith("--- "):
            found.append((start, "".join(lines)))
            start, lines = number, [line[4:]] if line.startswith("--- ") else []
        else:
            lines.append(line)
    found.append((start, "".join(lines)))
    return [(line, part) for line, part in found if part.strip()]


def _pools_in_file(path: str) -> list[Any]:
    """Every InferencePool in a file: several YAML documents, or a ``kind: List`` as kubectl prints it."""
    found = []
    for index, (line, part) in enumerate(_yaml_documents(_read(path)), 1):
        where = f"{path} (document {index}, line {line})"
        try:
            value = load.parse_yaml(part)
            if value is None:
                continue
            if isinstance(value, dict) and str(value.get("kind", "")).endswith("List") and "items" in value:
                for item_index, item in enumerate(value.get("items") or []):
                    where = f"{path} (document {index}, line {line}), items[{item_index}]"
                    found.append(load.parse_pool(item))
            else:
                found.append(load.parse_pool(value))
        except load.InvalidPool as error:
            raise UsageError(f"{where}: invalid InferencePool: " + "; ".join(str(e) for e in error.errors)) from None
    return found


def _pools_in_cluster() -> list[Any]:
    """Every InferencePool in the cluster of the current kubeconfig; invalid ones are skipped with a warning."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from sunblend.api import constants

    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise UsageError(f"--cluster: cannot load the kubeconfig: {error}") from None
    try:
        listed = client.CustomObjectsApi().list_cluster_custom_object(
            constants.GROUP, constants.VERSION, constants.PLURAL, _request_timeout=30
        )
    except ApiException as error:
        raise UsageError(f"--cluster: cannot list {constants.CRD_NAME}: {error.status} {error.reason}") from None
    except (HTTPError, OSError) as error:
        raise UsageError(f"--cluster: cannot reach the API server: {error}") from None
    found = []
    items: list[Any] = listed.get("items", []) if isinstance(listed, dict) else []
    for item in items:
        meta = item.get("metadata") or {}
        try:
            found.append(load.parse_pool(item))
        except load.InvalidPool as error:
            print(f"warning: skipping {meta.get('namespace')}/{meta.get('name')}: {error}", file=sys.stderr)
    return found


def _consolidation_table(advice: Sequence[Any], pools_read: int) -> str:
    from sunblend.core import consolidation

    if not advice:
        return f"No two of the {pools_read} pool(s) read serve the same modelServer.model in overlapping regions.\n"
    lines = []
    for group in advice:
        lines.append(f"{group.model}: {', '.join(group.pools)} (shared regions: {', '.join(group.shared_regions)})")
        if group.merged_dollars is not None:
            hours = group.horizon_hours
            lines.append(
                f"  {group.status.value}: ${group.separate_total_dollars / hours:,.2f}/h apart, "
                f"${group.merged_dollars / hours:,.2f}/h merged: saves ${group.saving_dollars_per_hour:,.2f}/h "
                f"({group.saving_ratio or 0.0:.1%}), ${group.saving_dollars:,.2f} over {hours} h "
                f"from {group.start:%Y-%m-%d %H:%M} UTC"
            )
        else:
            lines.append(f"  {group.status.value}")
        lines += [f"  reason: {reason}" for reason in group.reasons]
        lines += [f"  note: {note}" for note in group.notes]
        if group.status is consolidation.GroupStatus.ADVISED:
            lines.append(f"  {len(group.pools)} pools could share one pool; see docs/consolidation.md")
    return "\n".join(lines) + "\n"


def cmd_advise_consolidation(args: argparse.Namespace) -> int:
    """Find pools that serve the same model in overlapping regions, and what merging them would save."""
    from sunblend.core import consolidation

    if args.pools and args.cluster:
        raise UsageError("give InferencePool YAML files or --cluster, not both")
    if not args.pools and not args.cluster:
        raise UsageError("give InferencePool YAML files to read, or --cluster to read the cluster's pools")
    read = _pools_in_cluster() if args.cluster else [p for path in args.pools for p in _pools_in_file(path)]
    seen: dict[str, int] = {}
    entries = []
    for pool in read:
        entry = consolidation.PoolEntry(pool.metadata.namespace, pool.metadata.name, pool.spec)
        if entry.key in seen:
            raise UsageError(f"pool {entry.key} is given twice; each namespace/name must be unique")
        seen[entry.key] = 1
        entries.append(entry)
    now = _parse_time(args.at)
    for entry in entries:
        _check_horizon(now, entry.spec.planning.horizon_hours, "--at", args.at or now.isoformat())
    advice = consolidation.advise(entries, now)
    _emit(
        args.output,
        lambda: consolidation.document(advice),
        lambda: sys.stdout.write(_consolidation_table(advice, len(entries))),
    )
    return 0


def _span(text: str, flag: str) -> dt.timedelta:
    """A positive duration like 90m, 36h or 14d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
        if not 0 < seconds <= 10 * 366 * 86400:
            raise ValueError(text)
        return dt.timedelta(seconds=seconds)
    except (KeyError, ValueError, IndexError):
        raise UsageError(
            f"{flag}: {text!r} is not a positive duration like 5m, 36h or 14d (at most 10 years)"
        ) from None


def _until(text: str | None) -> dt.datetime:
    """The end of the Prometheus history: ``text`` (ISO 8601), or now."""
    if text is None:
        return _parse_time(None)
    try:
        return _parse_time(text)
    except UsageError:
        raise UsageError(f"--until: {text!r} is not an ISO 8601 time, e.g. 2026-11-22T14:00:00Z") from None


def cmd_advise_commitments(args: argparse.Namespace) -> int:
    """Advise what to commit to per GPU class, region and term, from demand history (a CSV trace or Prometheus)."""
    import time

    from sunblend.core import commitments
    from sunblend.present import advice as advice_view
    from sunblend.sim import history, traces

    pool = load.load_text(_read(args.pool))
    regions = [r.name for r in pool.spec.regions]
    if bool(args.demand) == bool(args.prometheus_url):
        raise UsageError("give the demand history as --demand FILE or as --prometheus-url URL, one of them")
    if not 0 <= args.demand_fall < 1:
        raise UsageError(f"--demand-fall: {args.demand_fall} is not a fraction from 0 to below 1")
    if not 0 < args.time_limit <= 3600:
        raise UsageError(f"--time-limit: {args.time_limit} is not a number of seconds from above 0 to 3600")
    if args.tokens_per_request is not None and not 0 < args.tokens_per_request < float("inf"):
        raise UsageError(f"--tokens-per-request: {args.tokens_per_request} is not a positive number")
    if not 0 < args.prometheus_timeout <= 600:
        raise UsageError(f"--prometheus-timeout: {args.prometheus_timeout} is not a number of seconds in (0, 600]")
    try:
        terms = [] if args.no_pool_term else [t for t in (commitments.pool_term(pool.spec),) if t is not None]
        for text in args.term:
            terms += history.parse_term(text, pool.spec)
        for path in args.terms:
            terms += history.read_terms(Path(path), pool.spec)
        hold = None
        if args.demand:
            samples = history.read_demand_history(Path(args.demand), regions, args.tokens_per_request)
        else:
            from sunblend.observe import history as prometheus_history

            hold = _span(args.step, "--step")
            config = _prometheus(args)
            try:
                samples = prometheus_history.read(
                    config,
                    regions,
                    _until(args.until),
                    _span(args.history, "--history"),
                    hold,
                    args.region_label,
                    args.demand_query,
                )
            except prometheus_history.HistoryUnavailable as error:
                raise UsageError(str(error)) from None
        peaks = commitments.hourly_peaks(samples, hold)
        sizing = commitments.sizing_problem(pool.spec, peaks)
        advice = commitments.advise(sizing, peaks, terms, time.perf_counter, args.time_limit, args.demand_fall)
    except (traces.TraceError, commitments.AdviceError) as error:
        raise UsageError(str(error)) from None
    except OverflowError:  # a timestamp whose UTC time leaves the calendar
        raise UsageError("a timestamp in the history is out of range: times must fall within years 1 to 9999") from None
    name = f"{pool.metadata.namespace}/{pool.metadata.name}"
    _emit(
        args.output,
        lambda: advice_view.document(advice, name),
        lambda: advice_view.render(advice, name, table.console()),
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator against the cluster in $KUBECONFIG (or in-cluster)."""
    if not 0 <= args.commitment_advice_hours <= 24 * 366:
        raise UsageError(
            f"--commitment-advice-hours: {args.commitment_advice_hours} is not a number of hours from 0 to 8784"
        )
    from sunblend.handlers import startup  # kopf registers handlers on import: only when running

    startup.run(
        startup.Options(
            namespaces=args.namespace or (),
            clusterwide=not args.namespace,
            standalone=not args.peering,
            peering_name=args.peering or "sunblend",
            priority=args.priority,
            liveness_endpoint=args.liveness or None,
            metrics_port=args.metrics_port or None,
            metrics_address=args.metrics_address,
            capacity_type_rules=Path(args.capacity_type_rules) if args.capacity_type_rules else None,
            prometheus=_prometheus(args),
            replan_seconds=args.replan_seconds,
            actuation_mode=ActuationMode(args.actuation_mode),
            node_provider=NodeProviderName(args.node_provider),
            kwok_delay_seconds=args.kwok_delay_seconds,
            gateway=_gateway(args.gateway),
            karpenter_node_class=_node_class(args.karpenter_node_class),
            interruption_rules=Path(args.interruption_rules) if args.interruption_rules else None,
            clock_offset_seconds=args.clock_offset_seconds,
            clock_speed=args.clock_speed,
            leader_election=args.leader_election,
            lease_name=args.lease_name,
            lease_namespace=args.lease_namespace,
            identity=args.identity,
            commitment_advice_hours=args.commitment_advice_hours,
        )
    )
    return 0


def _node_class(text: str | None) -> Any:
    """``GROUP/KIND/NAME`` of the NodeClass sunblend's Karpenter NodePools reference, or None (kwok's)."""
    if not text:
        return None
    from sunblend.actuate.providers import karpenter

    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise UsageError(
            f"--karpenter-node-class: {text!r} is not GROUP/KIND/NAME, e.g. karpenter.k8s.aws/EC2NodeClass/gpu"
        )
    return karpenter.NodeClassRef(*parts)


def _gateway(text: str | None) -> Any:
    """``NAMESPACE/NAME`` of the Gateway the HTTPRoutes attach to, or None."""
    if not text:
        return None
    from sunblend.actuate import routes

    namespace, _, name = text.rpartition("/")
    if not name:
        raise UsageError(f"--gateway: {text!r} is not NAMESPACE/NAME or NAME")
    return routes.GatewayRef(name=name, namespace=namespace or None)


def _prometheus(args: argparse.Namespace) -> Any:
    if not args.prometheus_url:
        return None
    from sunblend.observe import prometheus

    return prometheus.PrometheusConfig(
        url=args.prometheus_url,
        bearer_token_file=Path(args.prometheus_token_file) if args.prometheus_token_file else None,
        verify_tls=not args.prometheus_insecure,
        ca_file=Path(args.prometheus_ca_file) if args.prometheus_ca_file else None,
        timeout_seconds=args.prometheus_timeout,
    )


_OUTPUT_HELP = "table for people (default); json or yaml for scripts: stdout then carries only the document"


_TERMS_HELP = """\
Terms: the pool's committed prices are the term "pool" (unless --no-pool-term). More terms:
  --term 1y=5.10        one price, $/GPU-hour, for every GPU class and region the pool offers
  --term 3y=0.45x       a fraction of each class and region's on-demand price
  --term 3y=FILE.csv    a CSV with the columns gpu_class,region,usd_per_gpu_hour
  --terms FILE.csv      a CSV with the columns term,gpu_class,region,usd_per_gpu_hour
Each term is advised on its own. A class and region a term does not price gets no commitment
under it. Demand history: --demand FILE (the trace format of `sunblend simulate --demand`), or
--prometheus-url URL (range queries over --history at a --step, series labelled by region).
Each region's peak per UTC hour is planned under the pool's policy (headroom, routing, spot
share, spot loss, minimum replicas; not the budget or the change rules). See docs/advise.md.
"""


def _add_advise_commitments(advice_commands: Any) -> None:
    """``sunblend advise commitments``: its arguments."""
    cmd = advice_commands.add_parser(
        "commitments",
        help="advise what to commit to per GPU class, region and term, from demand history",
        description="Find the commitments per GPU class and region that minimise the cost of a demand history.",
        epilog=_TERMS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("pool", help="InferencePool YAML")
    cmd.add_argument("--demand", help="demand history CSV: timestamp, region, tokens_per_second")
    cmd.add_argument("--tokens-per-request", type=float, help="for demand given in requests_per_second")
    cmd.add_argument("--prometheus-url", help="read the demand history from this Prometheus instead")
    cmd.add_argument("--history", default="14d", help="how far back Prometheus is read (default 14d)")
    cmd.add_argument("--step", default="5m", help="Prometheus range-query step; hourly peaks are taken (default 5m)")
    cmd.add_argument("--until", help="ISO 8601 end of the Prometheus history (default: now)")
    cmd.add_argument("--region-label", default="region", help="the label naming a series' region (default region)")
    cmd.add_argument(
        "--demand-query", help="PromQL for tokens/s by region; $window becomes the step (default: vLLM's tokens)"
    )
    cmd.add_argument("--prometheus-token-file", help="file holding a bearer token for Prometheus")
    cmd.add_argument("--prometheus-ca-file", help="CA bundle for Prometheus's TLS certificate")
    cmd.add_argument("--prometheus-insecure", action="store_true", help="do not verify Prometheus's TLS certificate")
    cmd.add_argument("--prometheus-timeout", type=float, default=30.0, help="seconds per Prometheus request (30)")
    cmd.add_argument("--term", action="append", default=[], help="a term to advise on: NAME=PRICE|FRACTIONx|FILE.csv")
    cmd.add_argument(
        "--terms", action="append", default=[], help="CSV of terms: term,gpu_class,region,usd_per_gpu_hour"
    )
    cmd.add_argument("--no-pool-term", action="store_true", help="do not advise on the pool's own committed prices")
    cmd.add_argument("--demand-fall", type=float, default=0.2, help="the fall in demand whose risk is reported (0.2)")
    cmd.add_argument("--time-limit", type=float, default=60.0, help="seconds the search may take (60)")
    cmd.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help=_OUTPUT_HELP)
    cmd.set_defaults(run=cmd_advise_commitments)


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    from sunblend.sim import policies

    top = argparse.ArgumentParser(prog="sunblend", description="Plan GPU capacity for LLM inference pools.")
    top.add_argument("--version", action="version", version=f"%(prog)s {sunblend.__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="plan an InferencePool YAML file")
    plan.add_argument("pool", help="InferencePool YAML, as applied with kubectl")
    plan.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help=_OUTPUT_HELP)
    plan.add_argument("--at", help="plan from this ISO 8601 time instead of now")
    plan.add_argument("--png", help="write a chart of GPUs by capacity type per region")
    plan.set_defaults(run=cmd_plan)
    run = commands.add_parser("run", help="run the operator (kopf) against the current cluster")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--peering", help="peer with other replicas under this KopfPeering name (default: standalone)")
    run.add_argument("--priority", type=int, help="peering priority (default: derived from the pod name)")
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="act only while holding a coordination.k8s.io Lease, so that of several replicas one acts (default: on)",
    )
    run.add_argument("--lease-name", default="sunblend-leader", help="name of the leader Lease (sunblend-leader)")
    run.add_argument(
        "--lease-namespace",
        help="namespace of the leader Lease (default: the operator's: $POD_NAMESPACE, the service account's, "
        "or the kubeconfig context's)",
    )
    run.add_argument("--identity", help="this replica's name in the Lease (default: $POD_NAME, else hostname-pid)")
    run.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL ('' to disable)")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0 to disable)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address to serve metrics on")
    run.add_argument("--capacity-type-rules", help="YAML list of {label, values} mapping node labels to capacity types")
    run.add_argument("--prometheus-url", help="read utilisation and demand from this Prometheus (default: none)")
    run.add_argument("--prometheus-token-file", help="file holding a bearer token for Prometheus (a mounted Secret)")
    run.add_argument("--prometheus-ca-file", help="CA bundle for Prometheus's TLS certificate")
    run.add_argument("--prometheus-insecure", action="store_true", help="do not verify Prometheus's TLS certificate")
    run.add_argument("--prometheus-timeout", type=float, default=5.0, help="seconds per Prometheus request (5)")
    run.add_argument(
        "--commitment-advice-hours",
        type=float,
        default=24.0,
        help="with --prometheus-url: renew each pool's status.commitmentAdvice this often, and when its spec "
        "changes (24; 0 disables)",
    )
    run.add_argument(
        "--actuation-mode",
        choices=[m.value for m in ActuationMode],
        default=ActuationMode.ADVISORY.value,
        help="for pools that do not set spec.actuation.mode: Advisory (status only) or Enforce (default: Advisory)",
    )
    run.add_argument(
        "--node-provider",
        choices=[p.value for p in NodeProviderName],
        default=NodeProviderName.NONE.value,
        help="for pools that do not set spec.actuation.nodeProvider: who is asked for nodes (default: none)",
    )
    run.add_argument(
        "--kwok-delay-seconds",
        type=float,
        default=60.0,
        help="the kwok provider's provisioning delay, on the operator's clock (60)",
    )
    run.add_argument(
        "--karpenter-node-class",
        help="GROUP/KIND/NAME of the NodeClass sunblend's NodePools use, e.g. karpenter.k8s.aws/EC2NodeClass/gpu "
        "(default: karpenter.kwok.sh/KWOKNodeClass/default, Karpenter's kwok provider)",
    )
    run.add_argument(
        "--gateway",
        help="NAMESPACE/NAME of a Gateway API Gateway: each pool in Enforce mode owns one HTTPRoute per user "
        "region whose weights follow the plan (default: weights in status only)",
    )
    run.add_argument("--interruption-rules", help="YAML list of {taintKey, effect} marking spot interruption notices")
    run.add_argument(
        "--clock-offset-seconds",
        type=float,
        default=0.0,
        help="run the operator's clock this far ahead (tests and demos only; 0 in production)",
    )
    run.add_argument(
        "--clock-speed",
        type=float,
        default=1.0,
        help="run the operator's clock this many times faster (demos only; 1 in production)",
    )
    run.add_argument("--replan-seconds", type=float, default=30.0, help="how often every pool is stepped (30)")
    run.set_defaults(run=cmd_run)
    sim = commands.add_parser("simulate", help="replay demand, spot and price traces under a capacity policy")
    sim.add_argument("pool", help="InferencePool YAML")
    sim.add_argument("--demand", required=True, help="demand CSV: timestamp, region, tokens_per_second")
    sim.add_argument("--spot", help="spot CSV: timestamp, region, gpu_class, available_gpus")
    sim.add_argument("--prices", help="prices CSV: timestamp, region, gpu_class, capacity_type, usd_per_gpu_hour")
    sim.add_argument(
        "--policy",
        choices=("all", *policies.POLICIES),
        default="all",
        help="the capacity policy to replay, or all of them side by side (default: all)",
    )
    sim.add_argument("--step", default="1m", help="simulation step (default 1m)")
    sim.add_argument("--tokens-per-request", type=float, help="for demand given in requests_per_second")
    sim.add_argument("--on-demand-delay", default="3m", help="on-demand provisioning delay (default 3m)")
    sim.add_argument("--spot-delay", default="5m", help="spot provisioning delay (default 5m)")
    sim.add_argument("--preemption-notice", default="2m", help="spot preemption notice (default 2m)")
    sim.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help=_OUTPUT_HELP)
    sim.add_argument("--png", help="draw demand against capacity by capacity type, a panel per region")
    sim.set_defaults(run=cmd_simulate)
    from sunblend.agent import run as agent_run

    agent = commands.add_parser("agent", help="run the NVML GPU agent (a Prometheus exporter) on a GPU node")
    agent_run.add_arguments(agent)
    agent.set_defaults(run=cmd_agent)
    advise = commands.add_parser("advise", help="advice on pools: what to change to spend less")
    advice_commands = advise.add_subparsers(dest="advice", required=True)
    consolidation_cmd = advice_commands.add_parser(
        "consolidation", help="find pools of the same model in overlapping regions and what merging them saves"
    )
    consolidation_cmd.add_argument("pools", nargs="*", help="InferencePool YAML files (several documents each welcome)")
    consolidation_cmd.add_argument(
        "--cluster", action="store_true", help="read every InferencePool in the cluster of the current kubeconfig"
    )
    consolidation_cmd.add_argument("--at", help="plan from this ISO 8601 time instead of now")
    consolidation_cmd.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help=_OUTPUT_HELP
    )
    consolidation_cmd.set_defaults(run=cmd_advise_consolidation)
    _add_advise_commitments(advice_commands)
    crd_cmd = commands.add_parser("crd", help="print the InferencePool CRD generated from the models")
    crd_cmd.add_argument("-f", "--output-file", help="write to this file instead of stdout")
    crd_cmd.set_defaults(run=cmd_crd)
    return top


def _solver_banner_to_stderr() -> None:
    """Send HiGHS's banner to stderr, so that stdout carries only what the command prints.

    The C library prints it on stdout the first time a solver is made in a process, whatever
    its options say; making that first solver with file descriptor 1 pointed at stderr moves it.
    """
    import ctypes
    import os

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        highspy.Highs()  # type: ignore[no-untyped-call]
        ctypes.CDLL(None).fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sunblend`` command."""
    args = parser().parse_args(argv)
    if args.run in (cmd_plan, cmd_simulate, cmd_run, cmd_advise_consolidation, cmd_advise_commitments):
        _solver_banner_to_stderr()
    try:
        code: int = args.run(args)
    except load.InvalidPool as error:
        print(f"error: invalid InferencePool ({len(error.errors)} problem(s)):", file=sys.stderr)
        for problem_ in error.errors:
            print(f"  {problem_}", file=sys.stderr)
        return EXIT_INVALID
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    return code


if __name__ == "__main__":
    sys.exit(main())
