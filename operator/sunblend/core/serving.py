"""Serving along the routes: demand per user region assigned to running capacity by a maximum flow.

A pool lets users of region ``u`` be served in region ``r`` when the route ``(u, r)`` is allowed
(``BlendProblem.serving_regions``). ``assign`` finds how much of each user region's demand the
capacity now can serve (tokens/s), as a maximum flow on the bipartite graph source → user
regions → serving regions → sink: source to user ``u`` carries ``demand[u]``, user ``u`` to
server ``r`` is unbounded where the route is allowed, server ``r`` to sink carries
``capacity[r]``. Serving each region's own users first, then overflow greedily, is not enough:
with a chain A → B → C (A may use B, B may use C, A may not use C), B's users fill B and A's
overflow finds no room, though B's users could have gone to C. The maximum flow moves them.

Among the many maximum flows it picks one deterministically:

- **home first**: the least demand served away from its own region. It is a minimum-cost
  maximum flow, each token/s served in another region costing one unit and serving at home
  nothing, so a user region is served at home whenever that costs nothing in total served
  (and where capacity is short, a region's capacity goes to its own users first);
- then the order of the inputs: of equally cheap augmenting paths, the one ending at the server
  first in ``capacity``, found by scanning user regions in the order of ``demand`` (callers
  pass the pool's declared order). The same inputs always give the same flows.

It starts from each region serving its own users (a minimum-cost flow for its value) and adds
successive shortest augmenting paths (Bellman-Ford on the residual graph, at most 2R + 2
nodes), which keeps the flow of least cost at each value. Where every region's capacity covers
its own demand, no path is searched at all.

Pure: the simulator's engine (``sim.engine``) serves each minute with it, and the policy's
between-hours corrections (``core.policy``) judge what routed capacity leaves unmet with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sunblend.core.problem import BlendProblem

Routes = Mapping[str, Sequence[str]]  # user region -> the regions allowed to serve it

_RELATIVE_TOLERANCE = 1e-12  # of the total demand and capacity: below it, a flow is zero


class ServingError(ValueError):
    """Demand or capacity given to ``assign`` is not a finite, non-negative number."""


class Flow(NamedTuple):
    """Demand of users in ``user`` served in ``server``, in tokens/s."""

    user: str
    server: str
    tokens_per_second: float


class Assignment(NamedTuple):
    """Demand assigned to capacity: per user region what is served and what is not, per server the room left."""

    served: Mapping[str, float]  # user region -> tokens/s served (anywhere)
    unserved: Mapping[str, float]  # user region -> tokens/s no allowed route could serve
    flows: tuple[Flow, ...]  # positive flows, users in input order, then servers in input order
    spare: Mapping[str, float]  # serving region -> capacity left unused, tokens/s

    @property
    def total_served(self) -> float:
        """Tokens/s served in all."""
        return sum(self.served.values())

    @property
    def total_unserved(self) -> float:
        """Tokens/s no allowed route could serve, in all."""
        return sum(self.unserved.values())

    def routed(self, user: str) -> dict[str, float]:
        """Where ``user``'s served demand goes: serving region -> tokens/s."""
        return {f.server: f.tokens_per_second for f in self.flows if f.user == user}


def routes_of(problem: BlendProblem) -> dict[str, tuple[str, ...]]:
    """The allowed routes of ``problem``, per user region (self-routes included where allowed)."""
    return dict(_routes(problem.regions, problem.routes))


@functools.lru_cache(maxsize=64)
def _routes(regions: tuple[str, ...], allowed: frozenset[tuple[str, str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((user, tuple(r for r in regions if (user, r) in allowed)) for user in regions)


def _checked(kind: str, values: Mapping[str, float]) -> float:
    """The sum of ``values``; raises ``ServingError`` naming the first bad one."""
    total = 0.0
    for region, value in values.items():
        if not (value >= 0 and value != math.inf):  # also refuses NaN
            raise ServingError(f"{kind} of {region} is {value!r}: tokens/s must be finite and not negative")
        total += value
    return total


def assign(demand: Mapping[str, float], capacity: Mapping[str, float], routes: Routes) -> Assignment:
    """Serve as much of ``demand`` (tokens/s per user region) as ``capacity`` (tokens/s per serving
    region) can along ``routes``, preferring home; see the module's docstring for the choice.

    A user region absent from ``routes`` is served nowhere; a route to a region absent from
    ``capacity`` carries nothing. Raises ``ServingError`` for a negative, infinite or NaN figure.
    """
    tolerance = _RELATIVE_TOLERANCE * max(1.0, _checked("demand", demand) + _checked("capacity", capacity))
    spare = dict(capacity)
    left: dict[str, float] = {}
    flows: dict[tuple[str, str], float] = {}
    short = False
    for user, wanted in demand.items():
        room = spare.get(user, 0.0)
        if wanted > 0 and room > 0 and user in routes.get(user, ()):
            local = wanted if wanted < room else room
            flows[(user, user)] = local
            spare[user] = room - local
            wanted -= local
        left[user] = wanted
        if wanted > tolerance:
            short = True
    if short:
        _augment(demand, routes, left, spare, flows, tolerance)
        user_rank = {user: i for i, user in enumerate(demand)}
        server_rank = {server: i for i, server in enumerate(capacity)}
        flows = dict(sorted(flows.items(), key=lambda item: (user_rank[item[0][0]], server_rank[item[0][1]])))
    served: dict[str, float] = {}
    unserved: dict[str, float] = {}
    for user, wanted in demand.items():
        rest = left[user]
        if rest > tolerance:
            served[user] = float(wanted - rest)
            unserved[user] = float(rest)
        else:
            served[user] = float(wanted)
            unserved[user] = 0.0
    return Assignment(
        served,
        unserved,
        tuple([Flow(user, server, float(tokens)) for (user, server), tokens in flows.items() if tokens > tolerance]),
        {server: float(room) if room > tolerance else 0.0 for server, room in spare.items()},
    )


def _augment(
    demand: Mapping[str, float],
    routes: Routes,
    left: dict[str, float],
    spare: dict[str, float],
    flows: dict[tuple[str, str], float],
    tolerance: float,
) -> None:
    """Add shortest (cheapest) augmenting paths until none is left: the flow is then maximal.

    A path starts at a user region with demand left, goes to a server along an allowed route,
    and may go back from that server to a user it serves (cancelling part of that flow, so the
    user is served elsewhere), and so on, until a server with room.
    """
    while True:
        user_cost = {user: 0 for user in demand if left[user] > tolerance}
        server_cost: dict[str, int] = {}
        reached_from: dict[str, str] = {}  # server -> the user whose route reached it
        came_back: dict[str, str] = {}  # user -> the server whose flow to it is cancelled
        changed = True
        while changed:  # Bellman-Ford: the residual graph has no negative cycle
            changed = False
            for user, cost in user_cost.items():
                for server in routes.get(user, ()):
                    if server not in spare:
                        continue  # no capacity there
                    through = cost if server == user else cost + 1
                    if through < server_cost.get(server, math.inf):
                        server_cost[server] = through
                        reached_from[server] = user
                        changed = True
            for (user, server), tokens in flows.items():
                if tokens > tolerance and server in server_cost:
                    back = server_cost[server] if server == user else server_cost[server] - 1
                    if back < user_cost.get(user, math.inf):
                        user_cost[user] = back
                        came_back[user] = server
                        changed = True
        end: str | None = None
        cheapest = math.inf
        for server, room in spare.items():  # the cheapest server with room, ties to the first
            if room > tolerance and server_cost.get(server, math.inf) < cheapest:
                end, cheapest = server, server_cost[server]
        if end is None:
            return
        forward: list[tuple[str, str]] = []
        backward: list[tuple[str, str]] = []
        amount = spare[end]
        server = end
        while True:
            user = reached_from[server]
            forward.append((user, server))
            if user not in came_back:
                amount = min(amount, left[user])
                break
            server = came_back[user]
            backward.append((user, server))
            amount = min(amount, flows[(user, server)])
        left[user] -= amount
        spare[end] -= amount
        for key in forward:
            flows[key] = flows.get(key, 0.0) + amount
        for key in backward:
            flows[key] -= amount
            if flows[key] <= tolerance:
                del flows[key]
