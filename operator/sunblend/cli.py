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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

import sunblend
from sunblend.api import crd, load
from sunblend.api.spec import ActuationMode, NodeProviderName
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


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan one pool and print the plan."""
    pool = load.load_text(_read(args.pool))
    now = _parse_time(args.at)
    _check_horizon(now, pool.spec.planning.horizon_hours, "--at", args.at or now.isoformat())
    blend_problem = problem.from_spec(pool.spec, now)
    result = blend.plan(blend_problem)
    name = f"{pool.metadata.namespace}/{pool.metadata.name}"
    if args.output == "json":
        print(json.dumps(document.plan_document(result, name), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(document.plan_document(result, name), sort_keys=False), end="")
    else:
        table.render(result, name, dict(blend_problem.time_zones), table.console())
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
        return dt.timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise UsageError(f"{flag}: {text!r} is not a duration like 30s, 1m or 1h") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay traces under one policy (or all) and report cost and served demand."""
    from sunblend.sim import engine, policies, traces
    from sunblend.sim import run as sim_run

    pool = load.load_text(_read(args.pool))
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
    one_or_all = documents if len(documents) > 1 else documents[0]
    if args.output == "json":
        print(json.dumps(one_or_all, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(one_or_all, sort_keys=False), end="")
    else:
        table.render_simulation(documents, table.console())
    if args.png:
        from sunblend.present import chart

        try:
            chart.draw_simulation([r for r, d in results if "skipped" not in d], blend_problem, Path(args.png))
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


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator against the cluster in $KUBECONFIG (or in-cluster)."""
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
    if args.run in (cmd_plan, cmd_simulate, cmd_run):
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
