"""The decision engine's ``State`` as a JSON document, for the pool's status (``status.policyState``).

The operator writes it after every step and reads it back on the next, so an operator restart
continues where it stopped. Reading is forgiving: a document this version cannot read yields a
fresh ``State`` and says why, never a traceback. Pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sunblend.api.spec import CapacityType
from sunblend.core import headroom, policy, spotrisk
from sunblend.core.problem import OfferKey

VERSION = 2  # 2: learned spot risk (spotRisk) in place of the spot memory, and the forecast's error books


class UnreadableState(Exception):
    """The stored policy state cannot be read by this version."""


def _time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise UnreadableState(f"expected an RFC 3339 time, got {text!r}")
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise UnreadableState(f"bad time {text!r}") from error


def _offer(text: str) -> OfferKey:
    parts = text.split("/")
    if len(parts) != 3:
        raise UnreadableState(f"bad offer {text!r}; expected region/gpuClass/capacityType")
    try:
        return (parts[0], parts[1], CapacityType(parts[2]))
    except ValueError as error:
        raise UnreadableState(f"bad capacity type in {text!r}") from error


def _offer_text(key: OfferKey) -> str:
    return f"{key[0]}/{key[1]}/{key[2].value}"


def _counts(values: Mapping[OfferKey, int]) -> dict[str, int]:
    return {_offer_text(k): int(v) for k, v in sorted(values.items())}


def _read_counts(document: Any) -> dict[OfferKey, int]:
    if not isinstance(document, Mapping):
        raise UnreadableState("expected a map of offer to nodes")
    return {_offer(str(k)): int(v) for k, v in document.items()}


def _series(values: tuple[tuple[dt.datetime, float], ...]) -> list[list[Any]]:
    return [[_time(at), v] for at, v in values]


def _read_series(document: Any) -> tuple[tuple[dt.datetime, float], ...]:
    if not isinstance(document, list):
        raise UnreadableState("expected a list of [time, value]")
    return tuple((_parse_time(at), float(v)) for at, v in document)


def _hourly(values: tuple[tuple[dt.datetime, float], ...]) -> dict[str, Any]:
    """Hourly peaks as a start and a list of values (null for a missing hour): compact in status."""
    if not values:
        return {"start": None, "values": []}
    start = values[0][0]
    slots: list[float | None] = []
    for at, v in values:
        index = round((at - start).total_seconds() / 3600)
        slots.extend([None] * (index - len(slots) + 1))
        slots[index] = v
    return {"start": _time(start), "values": slots}


def _read_hourly(document: Any) -> tuple[tuple[dt.datetime, float], ...]:
    if not isinstance(document, Mapping) or document.get("start") is None:
        return ()
    start = _parse_time(document["start"])
    return tuple(
        (start + i * dt.timedelta(hours=1), float(v))
        for i, v in enumerate(document.get("values") or [])
        if v is not None
    )


def _risk(risk: spotrisk.SpotRisk) -> dict[str, Any]:
    return {
        "updated": _time(risk.updated),
        "asked": risk.asked,
        "refused": risk.refused,
        "nodeHours": risk.node_hours,
        "lost": risk.lost,
        "cap": risk.cap,
        "until": None if risk.until is None else _time(risk.until),
        "newsAt": None if risk.news_at is None else _time(risk.news_at),
        "windowSeconds": risk.window.total_seconds(),
    }


def _read_risk(document: Any) -> spotrisk.SpotRisk:
    if not isinstance(document, Mapping):
        raise UnreadableState("expected a spot risk map")
    until, news = document.get("until"), document.get("newsAt")
    cap = document.get("cap")
    return spotrisk.SpotRisk(
        updated=_parse_time(document["updated"]),
        asked=float(document.get("asked", 0.0)),
        refused=float(document.get("refused", 0.0)),
        node_hours=float(document.get("nodeHours", 0.0)),
        lost=float(document.get("lost", 0.0)),
        cap=None if cap is None else int(cap),
        until=None if until is None else _parse_time(until),
        news_at=None if news is None else _parse_time(news),
        window=dt.timedelta(seconds=float(document.get("windowSeconds", spotrisk.REFUSAL_WINDOW.total_seconds()))),
    )


def _book(book: headroom.ErrorBook) -> dict[str, Any]:
    return {
        "demand": book.demand,
        "hours": book.hours,
        "shortfall": list(book.shortfall),
        "excursion": list(book.excursion),
    }


def _read_book(document: Any) -> headroom.ErrorBook:
    if not isinstance(document, Mapping):
        raise UnreadableState("expected an error book map")
    return headroom.from_values(
        float(document["demand"]), document["shortfall"], float(document["hours"]), document["excursion"]
    )


def _floats(values: Mapping[str, float]) -> dict[str, float]:
    """Floats unrounded: JSON keeps them exactly, so a restart decides exactly as before."""
    return dict(sorted(values.items()))


def to_document(state: policy.State) -> dict[str, Any]:
    """``state`` as JSON-ready values."""
    nxt = state.next_plan
    return {
        "version": VERSION,
        "hour": None if state.hour is None else _time(state.hour),
        "hourPeaks": _floats(state.hour_peaks),
        "learned": {r: _hourly(v) for r, v in sorted(state.learned.items())},
        "correction": _floats(state.correction),
        "errors": {r: _book(b) for r, b in sorted(state.errors.items())},
        "expected": _floats(state.expected),
        "planned": _counts(state.planned),
        "replacement": _counts(state.replacement),
        "surge": _counts(state.surge),
        "nextPlan": None
        if nxt is None
        else {
            "hour": _time(nxt.hour),
            "targets": _counts(nxt.targets),
            "expected": _floats(nxt.expected),
            "madeAt": _time(nxt.made_at),
        },
        "spotRisk": {_offer_text(k): _risk(r) for k, r in sorted(state.spot_risk.items())},
        "recent": {r: _series(v) for r, v in sorted(state.recent.items())},
        "handledNotices": sorted(state.handled_notices),
        "throughput": _floats(state.throughput),
        "lowSince": {r: _time(at) for r, at in sorted(state.low_since.items())},
        "waitingSince": {r: _time(at) for r, at in sorted(state.waiting_since.items())},
    }


def from_document(document: Mapping[str, Any] | None) -> policy.State:
    """The ``State`` stored in ``document``; a fresh one when there is none.

    Raises ``UnreadableState`` when the document is there but cannot be read.
    """
    if not document:
        return policy.State()
    if document.get("version") != VERSION:
        raise UnreadableState(f"policy state version {document.get('version')!r}, this operator reads {VERSION}")
    try:
        nxt = document.get("nextPlan")
        hour = document.get("hour")
        return policy.State(
            hour=None if hour is None else _parse_time(hour),
            hour_peaks={str(k): float(v) for k, v in (document.get("hourPeaks") or {}).items()},
            learned={str(r): _read_hourly(v) for r, v in (document.get("learned") or {}).items()},
            correction={str(k): float(v) for k, v in (document.get("correction") or {}).items()},
            errors={str(r): _read_book(b) for r, b in (document.get("errors") or {}).items()},
            expected={str(k): float(v) for k, v in (document.get("expected") or {}).items()},
            planned=_read_counts(document.get("planned") or {}),
            replacement=_read_counts(document.get("replacement") or {}),
            surge=_read_counts(document.get("surge") or {}),
            next_plan=None
            if not nxt
            else policy.NextPlan(
                hour=_parse_time(nxt["hour"]),
                targets=_read_counts(nxt.get("targets") or {}),
                expected={str(k): float(v) for k, v in (nxt.get("expected") or {}).items()},
                made_at=_parse_time(nxt["madeAt"]),
            ),
            spot_risk={_offer(str(k)): _read_risk(r) for k, r in (document.get("spotRisk") or {}).items()},
            recent={str(r): _read_series(v) for r, v in (document.get("recent") or {}).items()},
            handled_notices=frozenset(str(n) for n in document.get("handledNotices") or []),
            throughput={str(k): float(v) for k, v in (document.get("throughput") or {}).items()},
            low_since={str(k): _parse_time(v) for k, v in (document.get("lowSince") or {}).items()},
            waiting_since={str(k): _parse_time(v) for k, v in (document.get("waitingSince") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UnreadableState(f"policy state unreadable: {error}") from error
