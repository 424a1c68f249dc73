"""The budget allocation itself: one type per tensor, the smallest total cost whose bytes fit.

Each tensor offers options ``(type, bytes, cost)``; choosing one per tensor with the least total
cost within a byte budget is a multiple-choice knapsack. Only the options on each tensor's lower
convex hull of (bytes, cost) can be worth taking at some price per byte (the Lagrangian view), but
at a fixed budget an option off the hull can be the best use of the last bytes, so the exact
problem is solved by dynamic programming over bytes counted in units of ``ceil(range / UNITS)``
bytes: every size is rounded *up* to whole units, so the chosen bytes never exceed the budget, and
the rounding costs at most one unit per tensor of budget. A last pass spends the bytes the rounding
left on the single upgrades that save the most cost per byte and still fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import MlxquantError


class BudgetError(MlxquantError, ValueError):
    """A budget that even the smallest option of every tensor does not fit, or no options."""


@dataclass(frozen=True)
class Option:
    """One way to store a tensor: its type, its bytes, and its estimated cost (KL units)."""

    type: str
    nbytes: int
    cost: float


UNITS = 40_000  # resolution of the dynamic programme over bytes


def allocate(options: Mapping[str, Sequence[Option]], budget: int) -> dict[str, Option]:
    """The option of every tensor that minimizes the total cost with total bytes <= ``budget``.

    Raises:
        BudgetError: a tensor without options, or a budget below the sum of the smallest options.
    """
    names = list(options)
    for name in names:
        if not options[name]:
            raise BudgetError(f"tensor {name!r}: no type to choose from")
    pareto = {n: pareto_front(options[n]) for n in names}
    floor = sum(p[0].nbytes for p in pareto.values())
    if floor > budget:
        raise BudgetError(f"the smallest type of every tensor takes {floor:,} bytes, more than the "
                          f"budget of {budget:,}")
    spare = budget - floor  # bytes above every tensor's smallest option
    top = sum(p[-1].nbytes - p[0].nbytes for p in pareto.values())
    unit = max(1, -(-min(spare, top) // UNITS))
    cap = spare // unit
    best = np.zeros(cap + 1)  # least cost of the tensors so far within b units (any b' <= b)
    picks = []
    for name in names:
        p = pareto[name]
        new = np.full(cap + 1, np.inf)
        arg = np.zeros(cap + 1, np.int16)
        for k, o in enumerate(p):
            w = -(-(o.nbytes - p[0].nbytes) // unit)  # rounded up: never over the budget
            if w > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[w:] = best[:cap + 1 - w] + o.cost
            better = cand < new
            new[better], arg[better] = cand[better], k
        best = new
        picks.append(arg)
    choice: dict[str, Option] = {}
    b = cap
    for name, arg in zip(reversed(names), reversed(picks)):
        p = pareto[name]
        o = p[int(arg[b])]
        choice[name] = o
        b -= -(-(o.nbytes - p[0].nbytes) // unit)
    used = sum(o.nbytes for o in choice.values())
    return _fill(options, {n: choice[n] for n in names}, budget - used)


def pareto_front(options: Sequence[Option]) -> list[Option]:
    """The options no other is both smaller and cheaper than, by increasing bytes."""
    out: list[Option] = []
    for o in sorted(options, key=lambda o: (o.nbytes, o.cost)):
        if not out or o.cost < out[-1].cost:
            out.append(o)
    return out


def _fill(options: Mapping[str, Sequence[Option]], choice: dict[str, Option], left: int) -> dict[str, Option]:
    """Spend ``left`` bytes on single upgrades (best saving per byte first) that still fit."""
    while left > 0:
        best, best_rate = None, 0.0
        for name, opts in options.items():
            cur = choice[name]
            for o in opts:
                extra = o.nbytes - cur.nbytes
                if 0 < extra <= left and o.cost < cur.cost:
                    rate = (cur.cost - o.cost) / extra
                    if rate > best_rate:
                        best, best_rate = (name, o), rate
        if best is None:
            return choice
        name, o = best
        left -= o.nbytes - choice[name].nbytes
        choice[name] = o
    return choice


def refine(options: Mapping[str, Sequence[Option]], choice: Mapping[str, Option],
           measure: Callable[[str, str], float]) -> dict[str, list[Option]]:
    """Replace estimates by measurements where the budget's margin is decided: for each tensor,
    ``measure(name, type)`` gives the real cost of its chosen type and of that type's neighbours
    on the Pareto front; its other estimates are rescaled by the measured/estimated ratio of the
    measured option nearest in bytes."""
    out: dict[str, list[Option]] = {}
    for name, opts in options.items():
        front = pareto_front(opts)
        i = next((k for k, o in enumerate(front) if o.type == choice[name].type), 0)
        measured = {o.type: measure(name, o.type) for o in front[max(0, i - 1):i + 2]}
        ratios = sorted((o.nbytes, measured[o.type] / o.cost) for o in opts
                        if o.type in measured and o.cost > 0)
        new = []
        for o in opts:
            if o.type in measured:
                new.append(Option(o.type, o.nbytes, measured[o.type]))
            elif ratios:
                r = min(ratios, key=lambda br: abs(br[0] - o.nbytes))[1]
                new.append(Option(o.type, o.nbytes, o.cost * r))
            else:
                new.append(o)
        out[name] = new
    return out
