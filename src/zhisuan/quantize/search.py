"""Per-layer sensitivity and the accuracy-budgeted search for the fewest layers kept in float.

Sensitivity of a layer = how much of the metric comes back when *only that layer* stays in float
while everything else is INT8 (``gain_pct``, in points of the relative drop). The search starts
from all-INT8, keeps the most sensitive layers in float in growing prefixes (1, 2, 4, ...) until the
budget is met, bisects to the shortest prefix that meets it, then tries to return each kept layer
to INT8 (least sensitive first). Every candidate is scored; the best one so far is written at
once (atomically), so a time budget that runs out or a Ctrl-C still leaves the best model found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zhisuan.progress import Progress, no_progress
from zhisuan.quantize.metrics import drop_pct
from zhisuan.results import Record

#: Why the search ended.
Stopped = Literal["budget met", "budget met by all-INT8", "no layer set meets the budget", "time budget",
                  "interrupted"]


@dataclass(frozen=True)
class LayerSensitivity(Record):
    """``value``: the metric with only ``node`` in float; ``gain_pct``: drop of all-INT8 minus that drop."""

    node: str
    op_type: str
    value: float | None
    drop_pct: float | None
    gain_pct: float | None
    rank: int | None


@dataclass(frozen=True)
class Candidate(Record):
    float_nodes: tuple[str, ...]
    value: float
    drop_pct: float
    meets_budget: bool
    seconds: float  # to the millisecond


@dataclass(frozen=True)
class FloatLayer(Record):
    """A layer the written model keeps in float, its sensitivity (when measured) and why it stays."""

    node: str
    op_type: str | None
    sensitivity_gain_pct: float | None
    sensitivity_rank: int | None
    reason: str


#: Why a layer stays in float when nothing more specific is known.
KEPT_BY_BEST = "kept in float by the best candidate found"


def float_layers(nodes: Sequence[str], ranked: Sequence[LayerSensitivity],
                 reasons: Mapping[str, str] | None = None) -> tuple[FloatLayer, ...]:
    """``nodes`` as :class:`FloatLayer` rows, with their sensitivity from ``ranked`` where measured."""
    gains = {r.node: r for r in ranked}
    reasons = reasons or {}
    rows = []
    for node in nodes:
        s = gains.get(node)
        reason = reasons.get(node, KEPT_BY_BEST)
        if s is None:
            rows.append(FloatLayer(node, None, None, None, reason))
        else:
            rows.append(FloatLayer(node, s.op_type, s.gain_pct, s.rank, reason))
    return tuple(rows)


@dataclass(frozen=True)
class SearchResult(Record):
    """How the budgeted search ended and every candidate it scored (the all-INT8 baseline first)."""

    stopped: Stopped
    candidates: int
    history: tuple[Candidate, ...]
    time_budget_s: float


class OutOfTime(Exception):
    """The time budget ran out (raised between candidates, never inside a write)."""


@dataclass
class Explorer:
    """Scores candidates (sets of nodes kept in float) and keeps, and writes, the best one."""

    build: Callable[[Path, Sequence[str]], Path]
    score: Callable[[Path], float]
    reference: float
    higher_is_better: bool
    max_drop_pct: float | None
    deadline: float
    workdir: Path
    on_best: Callable[[Path, Candidate], None]
    progress: Progress = no_progress
    history: list[Candidate] = field(default_factory=list)
    best: Candidate | None = None
    _cache: dict[frozenset[str], Candidate] = field(default_factory=dict)
    _count: int = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime

    def meets(self, drop: float) -> bool:
        return self.max_drop_pct is None or drop <= self.max_drop_pct + 1e-9

    def evaluate(self, float_nodes: Sequence[str], *, timed: bool = True) -> Candidate:
        key = frozenset(float_nodes)
        if key in self._cache:
            return self._cache[key]
        if timed:
            self.check_time()
        start = time.monotonic()
        self._count += 1
        path = self.workdir / f"candidate-{self._count}.onnx"
        self.build(path, sorted(key))
        value = self.score(path)
        drop = drop_pct(self.reference, value, self.higher_is_better)
        seconds = round(time.monotonic() - start, 3)
        cand = Candidate(tuple(sorted(key)), value, drop, self.meets(drop), seconds)
        self._cache[key] = cand
        self.history.append(cand)
        if self.best is None or _better(cand, self.best):
            self.best = cand
            self.on_best(path, cand)
        else:
            path.unlink(missing_ok=True)
        return cand


def _better(a: Candidate, b: Candidate) -> bool:
    """Meeting the budget beats not; then fewer float layers; then the higher metric."""
    if a.meets_budget != b.meets_budget:
        return a.meets_budget
    if a.meets_budget and len(a.float_nodes) != len(b.float_nodes):
        return len(a.float_nodes) < len(b.float_nodes)
    return a.drop_pct < b.drop_pct - 1e-12


def sensitivities(explorer: Explorer, nodes: Sequence[tuple[str, str]], base: Candidate) -> list[LayerSensitivity]:
    """Keep each node alone in float; ranked by gain. Nodes the time budget left unmeasured come last."""
    measured: dict[str, Candidate] = {}
    try:
        for i, (name, _op) in enumerate(nodes):
            explorer.progress(f"sensitivity: {name}", done=i, total=len(nodes))
            measured[name] = explorer.evaluate([name])
        explorer.progress("sensitivity", done=len(nodes), total=len(nodes))
    except OutOfTime:
        pass
    rows = []
    for name, op in nodes:
        cand = measured.get(name)
        if cand is None:
            rows.append(LayerSensitivity(name, op, None, None, None, None))
        else:
            rows.append(LayerSensitivity(name, op, cand.value, cand.drop_pct, base.drop_pct - cand.drop_pct, None))
    order = sorted(range(len(rows)), key=lambda i: (rows[i].gain_pct is None, -(rows[i].gain_pct or 0.0), i))
    ranked = []
    for rank, i in enumerate(order, 1):
        r = rows[i]
        ranked.append(LayerSensitivity(r.node, r.op_type, r.value, r.drop_pct, r.gain_pct,
                                       rank if r.gain_pct is not None else None))
    return ranked


@dataclass(frozen=True)
class SearchOutcome:
    float_layers: tuple[FloatLayer, ...]
    stopped: Stopped
    candidates: int


def budget_search(explorer: Explorer, ranked: Sequence[LayerSensitivity], base: Candidate) -> SearchOutcome:
    """Shortest sensitivity-ordered prefix kept in float that meets the budget, then pruned."""
    order = [r.node for r in ranked]
    reasons: dict[str, str] = {}
    stopped: Stopped = "budget met"
    chosen: list[str] = []
    try:
        if base.meets_budget:
            return SearchOutcome((), "budget met by all-INT8", len(explorer.history))
        # 1. grow the prefix geometrically until the budget is met
        lo, hi, k = 0, None, 1
        while k <= len(order):
            explorer.progress(f"search: {k} most sensitive layers in float", done=k, total=len(order))
            if explorer.evaluate(order[:k]).meets_budget:
                hi = k
                break
            lo = k
            k = len(order) if k < len(order) < 2 * k else 2 * k
        if hi is None:
            return SearchOutcome(_describe(explorer, ranked, {}), "no layer set meets the budget",
                                 len(explorer.history))
        # 2. bisect to the shortest prefix
        while hi - lo > 1:
            mid = (lo + hi) // 2
            explorer.progress(f"search: {mid} most sensitive layers in float", done=mid, total=len(order))
            if explorer.evaluate(order[:mid]).meets_budget:
                hi = mid
            else:
                lo = mid
        chosen = order[:hi]
        for node in chosen:
            reasons[node] = f"in the shortest sensitivity-ordered prefix ({hi} layers) that meets the budget"
        # 3. prune: return layers to INT8, least sensitive first, while the budget holds
        for i, node in enumerate(reversed(list(chosen))):
            if len(chosen) <= 1:
                break
            explorer.progress(f"prune: try {node} in INT8", done=i, total=hi)
            trial = [n for n in chosen if n != node]
            cand = explorer.evaluate(trial)
            if cand.meets_budget:
                chosen = trial
                reasons.pop(node, None)
            else:
                reasons[node] = f"returning it to INT8 gives a drop of {cand.drop_pct:.3f} %"
    except OutOfTime:
        stopped = "time budget"
    except KeyboardInterrupt:
        stopped = "interrupted"
    return SearchOutcome(_describe(explorer, ranked, reasons), stopped, len(explorer.history))


def _describe(explorer: Explorer, ranked: Sequence[LayerSensitivity],
              reasons: dict[str, str]) -> tuple[FloatLayer, ...]:
    best = explorer.best
    return float_layers(best.float_nodes if best else (), ranked, reasons)
