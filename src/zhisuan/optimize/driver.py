"""The fixpoint driver: run a pipeline of passes until the graph stops changing, keep the name map,
and verify the result against the original on ONNX Runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.graph import index
from zhisuan.graph.namemap import NameMap, read_name_map, write_name_map
from zhisuan.optimize.registry import (
    TARGETS,
    PassContext,
    PassInfo,
    PassOutcome,
    Target,
    default_pipeline,
    get_pass,
)
from zhisuan.results import Record, plain

if TYPE_CHECKING:
    from zhisuan.compare.metrics import TensorAgreement

MAX_ROUNDS = 8


@dataclass
class PassReport(Record):
    """What one pass did over every round of the fixpoint loop."""

    name: str
    changed: bool = False
    iterations: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nodes_removed: int = 0
    duration_s: float = 0.0
    skipped: str | None = None  # why the pass did not run (e.g. the target lacks its operators)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "duration_s": round(self.duration_s, 4)}

    def _absorb(self, outcome: PassOutcome, nodes_removed: int, seconds: float) -> None:
        self.iterations += 1
        self.duration_s += seconds
        self.nodes_removed += nodes_removed
        if outcome.changed:
            self.changed = True
        for key, n in outcome.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.details.extend(outcome.details[: max(0, 50 - len(self.details))])
        self.notes.extend(n for n in outcome.notes if n not in self.notes)


@dataclass(frozen=True)
class OutputCheck:
    """One graph output over every verification batch: its worst batch (largest ``max_abs_error``).

    ``agreement`` is None when the shapes differ (``shape_ref`` / ``shape_cand`` say how).
    """

    output: str
    within_tolerance: bool
    agreement: TensorAgreement | None
    shape_ref: tuple[int, ...] | None = None
    shape_cand: tuple[int, ...] | None = None

    @property
    def max_abs_error(self) -> float:
        return self.agreement.max_abs_error if self.agreement is not None else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The agreement's fields (or the two shapes), then ``within_tolerance``; the output's name is
        the key it is filed under."""
        if self.agreement is None:
            stats = {"max_abs_error": self.max_abs_error, "shape_ref": plain(self.shape_ref),
                     "shape_cand": plain(self.shape_cand)}
        else:
            stats = self.agreement.to_dict()
        return {**stats, "within_tolerance": self.within_tolerance}


@dataclass(frozen=True)
class Verification:
    """The optimized model's outputs against the original's on ONNX Runtime: ``passed`` when every
    element of every output is within ``atol + rtol * |reference|``. ``worst``: the failing output
    with the largest error, else the output with the largest error (None: no outputs)."""

    passed: bool
    rtol: float
    atol: float
    batches: int
    outputs: dict[str, OutputCheck]
    worst: OutputCheck | None

    def to_dict(self) -> dict[str, Any]:
        worst = None if self.worst is None else {"output": self.worst.output, **self.worst.to_dict()}
        return {"passed": self.passed, "rtol": self.rtol, "atol": self.atol, "batches": self.batches,
                "outputs": plain(self.outputs), "worst": worst}


@dataclass(frozen=True)
class OptimizeResult:
    """The optimized model, what each pass did, the name map (source -> result) and the verification."""

    model: Any
    passes: list[PassReport]
    name_map: NameMap
    verification: Verification | None  # None: not verified
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    rounds: int
    target: Target
    op_counts_before: dict[str, int]
    op_counts_after: dict[str, int]
    requires: list[str]  # non-standard operator domains the result needs, e.g. com.microsoft
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
            "rounds": self.rounds, "duration_s": round(self.duration_s, 3),
            "requires": list(self.requires),
            "op_counts_before": dict(self.op_counts_before), "op_counts_after": dict(self.op_counts_after),
            "passes": plain(self.passes),
            "verification": plain(self.verification),
            "name_map_entries": len(self.name_map.mapping),
        }


def _op_counts(model: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _requires(model: Any) -> list[str]:
    return sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})


def _resolve_pipeline(passes: Sequence[str] | None, opset: int | None,
                      target: Target) -> tuple[list[PassInfo], list[PassReport]]:
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    names = list(default_pipeline(target) if passes is None else passes)
    if not names and passes is not None:
        raise UserError("no passes given")
    if opset is not None and "upgrade-opset" not in names:
        names.insert(0, "upgrade-opset")
    infos, skipped = [], []
    for name in dict.fromkeys(names):
        info = get_pass(name)
        if info.supports(target):
            infos.append(info)
        else:
            reason = f"target {target} lacks its operators (needs one of: {', '.join(info.targets or ())})"
            skipped.append(PassReport(name, skipped=reason))
    return infos, skipped


def run_passes(
    model: Any, infos: Sequence[PassInfo], ctx: PassContext, *, max_rounds: int = MAX_ROUNDS
) -> tuple[Any, dict[str, PassReport], NameMap, int]:
    """Apply ``infos`` in order, repeatedly, until a whole round changes nothing. Mutates ``model``."""
    reports = {info.name: PassReport(info.name) for info in infos}
    name_map = NameMap.identity(index.tensor_names(model.graph))
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        any_changed = False
        for info in infos:
            if info.once and rounds > 1:
                continue
            before = index.tensor_names(model.graph)
            nodes = len(model.graph.node)
            start = time.perf_counter()
            outcome = info.fn(model, ctx)
            seconds = time.perf_counter() - start
            model = outcome.model
            reports[info.name]._absorb(outcome, nodes - len(model.graph.node), seconds)
            if outcome.changed:
                any_changed = True
                after = index.tensor_names(model.graph)
                step = {}
                for name in before:
                    dst = _follow(outcome.renamed, name)
                    if dst in after:
                        step[name] = dst
                name_map = name_map.then(NameMap(step))
        if not any_changed:
            break
    return model, reports, name_map, rounds


def _follow(renamed: dict[str, str], name: str) -> str:
    seen = {name}
    while name in renamed and renamed[name] not in seen:
        name = renamed[name]
        seen.add(name)
    return name


def optimize_model(
    model: Any,
    passes: Sequence[str] | None = None,
    *,
    opset: int | None = None,
    verify: bool = True,
    feeds: list[dict[str, np.ndarray]] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    target: Target = "onnxruntime",
    max_rounds: int = MAX_ROUNDS,
    source_sha256: str | None = None,
) -> OptimizeResult:
    """Optimize an ``onnx.ModelProto`` (left unchanged) and return the result, reports and name map.

    ``passes`` None runs :func:`default_pipeline` for ``target``; ``opset`` adds ``upgrade-opset``.
    With ``verify`` the original and the result run on ONNX Runtime with ``feeds`` (default: one
    seeded random batch) and every output must satisfy ``|a - b| <= atol + rtol * |a|``,
    otherwise a :class:`UserError` is raised.

    Example:
        >>> from zhisuan.optimize import optimize_model
        >>> result = optimize_model(onnx.load("model.onnx"))  # doctest: +SKIP
        >>> result.nodes_before, result.nodes_after  # doctest: +SKIP
    """
    import onnx

    start = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        from zhisuan.graph.onnx_io import load_model

        model = load_model(model)
    infos, skipped = _resolve_pipeline(passes, opset, target)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    ctx = PassContext(target=target, opset=opset)
    inputs = [v.name for v in model.graph.input]
    outputs = [v.name for v in model.graph.output]
    work, reports, step_map, rounds = run_passes(work, infos, ctx, max_rounds=max_rounds)
    if [v.name for v in work.graph.input] != inputs or [v.name for v in work.graph.output] != outputs:
        raise UserError("a pass changed the graph's input or output names; this is a bug in that pass")

    earlier = read_name_map(model)
    name_map = earlier.then(step_map) if earlier is not None else NameMap(step_map.mapping, source_sha256)
    write_name_map(work, name_map)

    verification = None
    if verify:
        verification = verify_outputs(model, work, feeds=feeds, rtol=rtol, atol=atol)
        if not verification.passed:
            worst = verification.worst
            assert worst is not None  # a failed check names its output
            culprit = _find_culprit(model, infos, ctx, feeds, rtol, atol, max_rounds)
            raise UserError(
                f"optimized model differs from the original: output {worst.output!r} max abs error "
                f"{worst.max_abs_error:.3g} (atol {atol:g}, rtol {rtol:g})"
                + (f"; first bad pass: {culprit}" if culprit else "")
            )
    ordered = [reports[i.name] for i in infos] + skipped
    return OptimizeResult(
        model=work, passes=ordered, name_map=name_map, verification=verification,
        nodes_before=len(model.graph.node), nodes_after=len(work.graph.node),
        bytes_before=model.ByteSize(), bytes_after=work.ByteSize(), rounds=rounds, target=target,
        op_counts_before=_op_counts(model), op_counts_after=_op_counts(work), requires=_requires(work),
        duration_s=time.perf_counter() - start,
    )


def _find_culprit(
    model: Any, infos: Sequence[PassInfo], ctx: PassContext, feeds: list[dict[str, np.ndarray]] | None,
    rtol: float, atol: float, max_rounds: int,
) -> str | None:
    """Re-run the pipeline one pass at a time, verifying after each, to name the first bad pass."""
    import onnx

    if model.ByteSize() > 200 * 2**20:  # too costly to replay on big models
        return None
    work = onnx.ModelProto()
    work.CopyFrom(model)
    for rnd in range(1, max_rounds + 1):
        changed = False
        for info in infos:
            if info.once and rnd > 1:
                continue
            outcome = info.fn(work, ctx)
            work = outcome.model
            if outcome.changed:
                changed = True
                if not verify_outputs(model, work, feeds=feeds, rtol=rtol, atol=atol).passed:
                    return info.name
        if not changed:
            break
    return None


def _runtime(model: Any) -> Any:
    from zhisuan.runtime import load_runtime

    try:
        # Check the graph as written: ORT's own rewrites would mask a wrong pass.
        return load_runtime(model, "onnxruntime", graph_optimization_level="disable")
    except UserError as exc:
        raise UserError(f"ONNX Runtime cannot load the model for verification: {exc}") from None


def plausible_feeds(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Random integer token-type ids / masks index out of range; give them their usual values."""
    out = dict(feed)
    for name, arr in feed.items():
        if np.issubdtype(arr.dtype, np.integer):
            low = name.lower()
            if "token_type" in low or "segment" in low:
                out[name] = np.zeros_like(arr)
            elif "mask" in low:
                out[name] = np.ones_like(arr)
    return out


def verify_outputs(
    reference: Any, candidate: Any, *, feeds: list[dict[str, np.ndarray]] | None = None,
    rtol: float = 1e-3, atol: float = 1e-4,
) -> Verification:
    """Run both models on ONNX Runtime with the same inputs and compare every graph output."""
    from zhisuan.compare.metrics import agreement
    from zhisuan.inputs import sample_inputs

    if feeds is None:
        feeds = [plausible_feeds(f) for f in sample_inputs(reference)]
    ref_rt, cand_rt = _runtime(reference), _runtime(candidate)
    names = [o.name for o in ref_rt.outputs()]
    per_output: dict[str, OutputCheck] = {}
    passed = True
    worst: OutputCheck | None = None
    for feed in feeds:
        try:
            ref_out = ref_rt.run(feed, names)
        except UserError as exc:
            raise UserError(
                f"the original model fails on the verification inputs ({str(exc)[:300]}); give real inputs "
                "(--data) or skip verification (--no-verify)"
            ) from None
        cand_out = cand_rt.run(feed, names)
        for name in names:
            a, b = ref_out[name], cand_out[name]
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                check = OutputCheck(name, False, None, a.shape, b.shape)
            else:
                af, bf = a.astype(np.float64), b.astype(np.float64)
                both_nan = np.isnan(af) & np.isnan(bf)
                close = (np.abs(af - bf) <= atol + rtol * np.abs(af)) | both_nan
                check = OutputCheck(name, bool(close.all()), agreement(np.where(both_nan, 0, af),
                                                                       np.where(both_nan, 0, bf)))
            prev = per_output.get(name)
            if prev is None or check.max_abs_error > prev.max_abs_error:
                per_output[name] = check
            passed = passed and check.within_tolerance
            if not check.within_tolerance and (worst is None or check.max_abs_error > worst.max_abs_error):
                worst = check
    if worst is None and per_output:
        worst = max(per_output.values(), key=lambda c: c.max_abs_error)
    return Verification(passed, rtol, atol, len(feeds), per_output, worst)
