"""A planning deadline: how much of the time limit is left, read from a clock that is passed in.

The planner (``core.blend``, ``core.coupled``) shares what is left among the solves still to run,
so the whole plan, not each solve, keeps the pool's ``planning.timeLimitSeconds``.
"""

from __future__ import annotations

from collections.abc import Callable

# The shortest time a solve is given: HiGHS needs a few milliseconds to return any plan at all.
SHORTEST_SOLVE_SECONDS = 0.01


class Deadline:
    """A point in time ``seconds`` after creation, on ``clock`` (seconds, monotonic)."""

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self._clock = clock
        self._started = clock()
        self._seconds = seconds

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return self._clock() - self._started

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(self._seconds - self.elapsed(), 0.0)

    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0

    def part(self, fraction: float) -> Deadline:
        """A deadline sooner than this one: ``fraction`` of the time left from now."""
        return Deadline(self._clock, self.remaining() * fraction)

    def share(self, solves_left: int) -> float:
        """A fair time limit for the next of ``solves_left`` solves."""
        return max(self.remaining() / max(solves_left, 1), SHORTEST_SOLVE_SECONDS)
