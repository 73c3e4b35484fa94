"""Background passes beside the fast loop: one daemon thread calling ``run_once(now)`` at an interval.

The advisers (consolidation, commitments) are such passes. A pass that raises is logged and the
next pass retries, so one bad pool never stops the thread. ``leading`` and ``now`` read the
operator's memo: the leader-election check and the operator's clock (which tests may move).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def leading(memo: Mapping[str, Any]) -> bool:
    """Whether this replica holds the leader Lease (True when no election runs)."""
    check: Callable[[], bool] | None = memo.get("leading")
    return check is None or check()


def now(memo: Mapping[str, Any]) -> dt.datetime:
    """The operator's clock."""
    clock: Callable[[], dt.datetime] | None = memo.get("clock")
    return clock() if clock is not None else dt.datetime.now(dt.UTC)


class Pass:
    """A daemon thread named ``name`` that calls ``run_once`` every ``interval`` seconds."""

    def __init__(self, memo: Mapping[str, Any], interval: float, name: str) -> None:
        self._memo = memo
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self, now: dt.datetime) -> object:
        """One pass at ``now``."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once(now(self._memo))
            except Exception:  # the thread must survive one bad pass; the next pass retries
                logger.exception("%s pass failed", self._thread.name)
