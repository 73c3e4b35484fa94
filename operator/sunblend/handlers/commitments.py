"""The operator's commitment advice: ``status.commitmentAdvice`` on each pool, from its demand history.

One background thread per operator (``CommitmentAdviser``, started by ``startup`` beside the fast
loop when the operator runs with ``--prometheus-url``) looks every ``interval`` seconds at the
latest pool bodies kopf has seen (``memo["pools"]``). A pool is advised on when it has none yet,
when its spec's generation changed, or when its advice is ``every`` old (``--commitment-advice-hours``,
a day by default); advice that failed is tried again after at most ``RETRY``. For each, it reads
the pool's regions' demand over ``window`` from Prometheus (the queries of ``observe.history``,
as ``sunblend advise commitments --prometheus-url`` makes them), computes the advice
(``core.commitment_status``, with a time limit), and patches only ``status.commitmentAdvice``.
When what it advises changes it posts ``CommitmentAdvised``; when it cannot advise, the reason goes
into ``status.commitmentAdvice.error``, a ``CommitmentAdviceFailed`` event (when the reason
changes) and the log. Pools with no committed price are left alone: there is no term to advise on.

Only the leader acts: each pool is advised, and its status written, only while ``memo["leading"]``
says this replica holds the leader Lease. A failing pass never stops the thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sunblend.api import constants, load, spec, status
from sunblend.core import commitment_status, commitments
from sunblend.handlers import background
from sunblend.observe import history, prometheus

EVERY = dt.timedelta(hours=24)
RETRY = dt.timedelta(hours=1)
INTERVAL_SECONDS = 60.0
WINDOW = dt.timedelta(days=14)
STEP = history.DEFAULT_STEP
TIME_LIMIT_SECONDS = 60.0

logger = logging.getLogger(__name__)

Samples = Mapping[str, Sequence[tuple[dt.datetime, float]]]
PoolKey = tuple[str, str]  # (namespace, name)


class HistoryReader(Protocol):
    """Reads each region's demand samples (``PrometheusHistory``; a fake in the unit tests)."""

    def read(self, regions: Sequence[str], window: commitment_status.Window) -> Samples: ...


class StatusPoster(Protocol):
    """Patches a pool's status and posts events (``actuate.status.StatusWriter``; a recorder in tests)."""

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool: ...

    def post_event(
        self, pool: Mapping[str, Any], event_type: str, reason: str, message: str, now: dt.datetime
    ) -> None: ...


class PrometheusHistory:
    """Demand history through ``observe.history``: tokens/s summed by the ``region`` label."""

    def __init__(self, config: prometheus.PrometheusConfig) -> None:
        self._config = config

    def read(self, regions: Sequence[str], window: commitment_status.Window) -> Samples:
        return history.read(self._config, regions, window.end, window.span, window.step)


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def due(previous: Mapping[str, Any] | None, generation: int | None, now: dt.datetime, every: dt.timedelta) -> bool:
    """Whether a pool whose last advice is ``previous`` (a status document, or None) is advised on at ``now``."""
    if not previous or previous.get("observedGeneration") != generation:
        return True
    computed = _parse_time(previous.get("computedAt"))
    if computed is None:
        return True
    wait = min(every, RETRY) if previous.get("error") else every
    return now - computed >= wait


def _computed(document: Mapping[str, Any]) -> dt.datetime:
    return _parse_time(document.get("computedAt")) or dt.datetime.min.replace(tzinfo=dt.UTC)


def end_of_history(now: dt.datetime, step: dt.timedelta) -> dt.datetime:
    """The history's end: ``now`` rounded down to a whole ``step`` (so a repeat reads the same points)."""
    seconds = step.total_seconds()
    return dt.datetime.fromtimestamp(now.timestamp() // seconds * seconds, dt.UTC)


def document(advice: status.CommitmentAdvice) -> dict[str, Any]:
    """The advice as a status merge patch: absent fields as null, so that they are cleared."""
    patch = advice.model_dump(by_alias=True)
    patch["commitments"] = [row.model_dump(by_alias=True, exclude_none=True) for row in advice.commitments]
    return patch


class CommitmentAdviser(background.Pass):
    """One background thread keeping ``status.commitmentAdvice`` of every pool, rarely recomputed."""

    def __init__(
        self,
        memo: Mapping[str, Any],
        poster: StatusPoster,
        reader: HistoryReader,
        every: dt.timedelta = EVERY,
        interval: float = INTERVAL_SECONDS,
        window: dt.timedelta = WINDOW,
        step: dt.timedelta = STEP,
        time_limit_seconds: float = TIME_LIMIT_SECONDS,
    ) -> None:
        super().__init__(memo, interval, "sunblend-commitments")
        self._poster = poster
        self._reader = reader
        self._every = every
        self._window = window
        self._step = step
        self._time_limit = time_limit_seconds
        self._written: dict[PoolKey, dict[str, Any]] = {}  # the last advice written, until kopf's body shows it

    def run_once(self, now: dt.datetime) -> list[tuple[PoolKey, dict[str, Any]]]:
        """Advise every pool that is due at ``now``; return the advice written, as status documents."""
        pools: Mapping[PoolKey, str] = self._memo.get("pools", {})
        self._written = {k: v for k, v in self._written.items() if k in pools}  # forget pools gone
        written = []
        for key, text in list(pools.items()):
            body = json.loads(text)
            try:
                pool_spec = load.parse_spec(body.get("spec"))
            except load.InvalidPool:
                continue  # the pool's own handler reports its errors
            if commitments.pool_term(pool_spec) is None:
                continue  # no committed price: nothing to advise on
            generation = (body.get("metadata") or {}).get("generation")
            previous = self._previous(key, body)
            if not due(previous, generation, now, self._every):
                continue
            if not background.leading(self._memo):
                break  # the leader Lease lapsed: advise nothing more
            advised = self._advise(key, body, pool_spec, generation, now)
            if not background.leading(self._memo):
                break  # lost the Lease while solving: write nothing
            if not self._poster.patch_status(key[0], key[1], {"commitmentAdvice": advised}):
                continue  # the pool is gone
            self._written[key] = advised
            self._announce(key, body, previous, advised)
            written.append((key, advised))
        return written

    def _previous(self, key: PoolKey, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The pool's last advice: the body's, or the one written since if kopf has not shown it yet."""
        shown = (body.get("status") or {}).get("commitmentAdvice")
        shown = shown if isinstance(shown, dict) else None
        mine = self._written.get(key)
        if mine is None or (shown is not None and _computed(shown) >= _computed(mine)):
            return shown
        return mine

    def _advise(
        self,
        key: PoolKey,
        body: Mapping[str, Any],
        pool_spec: spec.InferencePoolSpec,
        generation: int | None,
        now: dt.datetime,
    ) -> dict[str, Any]:
        window = commitment_status.Window(end_of_history(now, self._step), self._window, self._step)
        regions = [r.name for r in pool_spec.regions]
        started = time.perf_counter()
        try:
            samples = self._reader.read(regions, window)
            advice = commitment_status.advise_pool(
                pool_spec, samples, window, time.perf_counter, self._time_limit, now, generation
            )
        except (history.HistoryUnavailable, commitments.AdviceError) as error:
            advice = commitment_status.failed(str(error), window, now, generation)
        except Exception as error:  # a bug must not stop the adviser: report it on the pool
            logger.exception("commitment advice for %s/%s failed", *key)
            advice = commitment_status.failed(f"internal error: {error}", window, now, generation)
        if advice.error:
            logger.warning("commitment advice for %s/%s: %s", key[0], key[1], advice.error)
        else:
            logger.info(
                "commitment advice for %s/%s in %.1f s: %s",
                key[0],
                key[1],
                time.perf_counter() - started,
                commitment_status.message(advice),
            )
        return document(advice)

    def _announce(
        self, key: PoolKey, body: Mapping[str, Any], previous: Mapping[str, Any] | None, document: Mapping[str, Any]
    ) -> None:
        stamp = dt.datetime.now(dt.UTC)  # events carry the wall clock, even when the decision clock is moved
        error = document.get("error")
        if error:
            if not previous or previous.get("error") != error:
                self._poster.post_event(body, "Warning", constants.REASON_COMMITMENT_ADVICE_FAILED, str(error), stamp)
            return
        advice = status.CommitmentAdvice.model_validate(document)
        if commitment_status.changed(previous, advice):
            self._poster.post_event(
                body, "Normal", constants.REASON_COMMITMENT_ADVISED, commitment_status.message(advice), stamp
            )
