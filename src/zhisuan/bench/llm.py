"""LLM token metrics (EV-5): TTFT, TPOT, ITL, end-to-end latency and tokens/s of streamed requests.

Definitions (the ones vLLM's serving benchmark and MLPerf LoadGen use; every figure is per
request first, then summarised over requests):

- **TTFT** (time to first token) = time the first output chunk is available - request start.
- **E2E** (end-to-end latency) = time the last output chunk is available - request start.
- **TPOT** (time per output token) = (E2E - TTFT) / (output tokens - 1); undefined for a
  single-token answer. It is a per-request mean over the decode phase.
- **ITL** (inter-token latency) = the gaps between consecutive streamed chunks of one request;
  a chunk may hold several tokens, so ITL and TPOT differ when chunks do. ITL percentiles are
  taken over all gaps of all requests pooled.
- **Output tokens/s** per request = output tokens / E2E; overall = all output tokens / wall time
  from the first request's start to the last request's end (what a server delivers).

Percentiles are numpy's linear interpolation (``np.percentile``). Times are ``time.perf_counter``.

Requests are greedy decoding on a KV-cache decoder with the GPT-2 signature of the zoo's
``gpt2-small`` (``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key/value``
-> ``logits``, ``present.{i}.key/value``; see its zoo metadata ``kv_cache``): one prefill call,
then one call per new token, each new token streamed as one chunk.

>>> t = RequestTrace(start_s=0.0, chunk_s=(0.10, 0.12, 0.15), chunk_tokens=(1, 1, 1))
>>> round(t.ttft_s, 3), round(t.tpot_s, 3), [round(x, 3) for x in t.itl_s]
(0.1, 0.025, [0.02, 0.03])
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import InternalError, UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

if TYPE_CHECKING:  # the LoadGen package is imported only by the run that needs it
    from zhisuan.bench.loadgen import Scenario

__all__ = [
    "KvDecoder",
    "LlmLoadGenResult",
    "RequestTrace",
    "TokenMetrics",
    "loadgen_token_run",
    "measure_requests",
    "stats_ms",
    "summarize_requests",
]

@dataclass(frozen=True)
class RequestTrace:
    """When each streamed chunk of one request became available (seconds, one clock)."""

    start_s: float
    chunk_s: tuple[float, ...]
    chunk_tokens: tuple[int, ...]
    prompt_tokens: int = 0
    tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.chunk_s or len(self.chunk_s) != len(self.chunk_tokens):
            raise UserError("a request trace needs one token count per chunk and at least one chunk")
        if any(b < a for a, b in pairwise((self.start_s, *self.chunk_s))):
            raise UserError("chunk times must not go back in time")
        if any(n < 1 for n in self.chunk_tokens):
            raise UserError("every chunk holds at least one token")

    @property
    def output_tokens(self) -> int:
        return int(sum(self.chunk_tokens))

    @property
    def ttft_s(self) -> float:
        return self.chunk_s[0] - self.start_s

    @property
    def e2e_s(self) -> float:
        return self.chunk_s[-1] - self.start_s

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1); None for a single output token."""
        n = self.output_tokens
        return (self.e2e_s - self.ttft_s) / (n - 1) if n > 1 else None

    @property
    def itl_s(self) -> tuple[float, ...]:
        """Gaps between consecutive chunks."""
        return tuple(b - a for a, b in pairwise(self.chunk_s))

    @property
    def tokens_per_s(self) -> float | None:
        return self.output_tokens / self.e2e_s if self.e2e_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "ttft_ms": self.ttft_s * 1e3,
            "tpot_ms": None if self.tpot_s is None else self.tpot_s * 1e3,
            "itl_ms": [x * 1e3 for x in self.itl_s],
            "e2e_latency_ms": self.e2e_s * 1e3,
            "tokens_per_s": self.tokens_per_s,
        }


def stats_ms(values_s: Sequence[float]) -> dict[str, float | int]:
    """count, min, mean, p50, p90, p99, max of durations given in seconds, in milliseconds."""
    return _stats(values_s, 1e3)


def _stats(raw: Sequence[float | None], scale: float) -> dict[str, float | int]:
    values = np.asarray([v for v in raw if v is not None], dtype=np.float64) * scale
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


@dataclass(frozen=True)
class TokenMetrics(Record):
    """Token latency figures of a set of requests (see the module docstring for definitions)."""

    requests: int
    concurrency: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float
    ttft_ms: dict[str, float | int]
    tpot_ms: dict[str, float | int]
    itl_ms: dict[str, float | int]
    e2e_latency_ms: dict[str, float | int]
    request_tokens_per_s: dict[str, float | int]  # per request, summarised (not in ms)
    output_tokens_per_s: float
    requests_per_s: float
    per_request: tuple[dict[str, Any], ...] = ()
    definitions: dict[str, str] = field(default_factory=dict)


DEFINITIONS = {
    "ttft": "time to first token: first output chunk available - request start",
    "e2e_latency": "end-to-end latency: last output chunk available - request start",
    "tpot": "time per output token: (e2e - ttft) / (output tokens - 1), per request",
    "itl": "inter-token latency: gap between consecutive streamed chunks, pooled over requests",
    "output_tokens_per_s": "all output tokens / wall time from the first request start to the last request end",
    "request_tokens_per_s": "output tokens / e2e, per request",
}


def summarize_requests(
    traces: Sequence[RequestTrace], *, concurrency: int = 1, wall_s: float | None = None
) -> TokenMetrics:
    """Per-request metrics of ``traces`` summarised into percentiles, plus overall tokens/s."""
    if not traces:
        raise UserError("no requests to summarise")
    wall = wall_s if wall_s is not None else max(t.chunk_s[-1] for t in traces) - min(t.start_s for t in traces)
    tokens = sum(t.output_tokens for t in traces)
    per_s = _stats([t.tokens_per_s for t in traces], 1.0)
    return TokenMetrics(
        requests=len(traces),
        concurrency=concurrency,
        prompt_tokens=sum(t.prompt_tokens for t in traces),
        output_tokens=tokens,
        wall_s=wall,
        ttft_ms=stats_ms([t.ttft_s for t in traces]),
        tpot_ms=stats_ms([t.tpot_s for t in traces if t.tpot_s is not None]),
        itl_ms=stats_ms([gap for t in traces for gap in t.itl_s]),
        e2e_latency_ms=stats_ms([t.e2e_s for t in traces]),
        request_tokens_per_s=per_s,
        output_tokens_per_s=tokens / wall if wall > 0 else float("nan"),
        requests_per_s=len(traces) / wall if wall > 0 else float("nan"),
        per_request=tuple(t.to_dict() for t in traces),
        definitions=dict(DEFINITIONS),
    )


# ---------------------------------------------------------------------------------------------
# Streaming greedy decoding with the KV cache


class KvDecoder:
    """Greedy decoding on a runtime with the GPT-2 KV-cache signature, streaming one token per step.

    The protocol is the zoo's (``zoo.get("gpt2-small").metadata["kv_cache"]``): the prefill feeds
    past tensors of length 0 and the whole prompt; each later step feeds one token, an
    attention mask of ones over past + 1, ``position_ids`` = past length, and the previous
    presents as the past. The runtime must allow concurrent ``run`` calls to serve several
    streams (ONNX Runtime sessions do).
    """

    def __init__(self, runtime: Any) -> None:
        specs = {s.name: s for s in runtime.inputs()}
        outputs = {s.name for s in runtime.outputs()}
        layers = 0
        while f"past_key_values.{layers}.key" in specs:
            layers += 1
        if layers == 0 or not {"input_ids", "attention_mask"} <= set(specs) or "logits" not in outputs:
            raise UserError("the model has no GPT-2 KV-cache signature (input_ids, attention_mask, "
                            "past_key_values.{i}.key/value -> logits, present.{i}.key/value)")
        first = specs["past_key_values.0.key"]
        heads, head_dim = first.shape[1], first.shape[3]
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            raise UserError(f"past_key_values.0.key needs static heads and head size, got {list(first.shape)}")
        self.runtime = runtime
        self.layers = layers
        self.heads = heads
        self.head_dim = head_dim
        self.kv_dtype = np.dtype(first.dtype)
        self.has_positions = "position_ids" in specs
        self._pairs = [(f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(layers) for k in ("key", "value")]
        self._wanted = ["logits"] + [present for _, present in self._pairs]

    def stream(
        self,
        prompt_ids: np.ndarray,
        max_new_tokens: int,
        *,
        on_chunk: Callable[[int, list[int], float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> RequestTrace:
        """Decode one prompt (int64 ``[tokens]`` or ``[1, tokens]``); ``on_chunk(step, tokens, t)`` streams."""
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        length = prompt.shape[1]
        if length < 1:
            raise UserError("the prompt is empty")
        empty = np.zeros((1, self.heads, 0, self.head_dim), dtype=self.kv_dtype)
        past = {name: empty for name, _ in self._pairs}
        ids, positions = prompt, np.arange(length, dtype=np.int64)[None, :]
        times: list[float] = []
        tokens: list[int] = []
        start = clock()
        for step in range(max_new_tokens):
            total = length + step
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), dtype=np.int64), **past}
            if self.has_positions:
                feeds["position_ids"] = positions
            out = self.runtime.run(feeds, self._wanted)
            token = int(np.argmax(out["logits"][0, -1]))
            now = clock()
            times.append(now)
            tokens.append(token)
            if on_chunk is not None:
                on_chunk(step, [token], now)
            ids = np.array([[token]], dtype=np.int64)
            positions = np.array([[total]], dtype=np.int64)
            past = {name: out[present] for name, present in self._pairs}
        return RequestTrace(start, tuple(times), (1,) * len(times), length, tuple(tokens))


def measure_requests(
    runtime: Any,
    prompts: np.ndarray | Sequence[np.ndarray],
    max_new_tokens: int,
    *,
    concurrency: int = 1,
    progress: Progress = no_progress,
) -> tuple[TokenMetrics, list[RequestTrace]]:
    """Run every prompt as one streamed request, ``concurrency`` at a time (client threads).

    Each client thread takes the next prompt as soon as its previous request ends, as a
    closed-loop load generator does; all share ``runtime`` (one model instance, like a server).
    """
    if concurrency < 1:
        raise UserError(f"concurrency must be >= 1, got {concurrency}")
    if concurrency > 1 and getattr(runtime, "name", "") == "openvino":
        raise UserError("the openvino runner has one infer request; measure concurrent streams on onnxruntime")
    decoder = KvDecoder(runtime)
    todo: queue.Queue[tuple[int, np.ndarray]] = queue.Queue()
    for i, p in enumerate(prompts):
        todo.put((i, np.asarray(p)))
    total = todo.qsize()
    if total == 0:
        raise UserError("no prompts")
    traces: dict[int, RequestTrace] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                i, prompt = todo.get_nowait()
            except queue.Empty:
                return
            try:
                trace = decoder.stream(prompt, max_new_tokens)
            except BaseException as exc:  # re-raised in the caller's thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                traces[i] = trace
                progress(f"LLM requests (concurrency {concurrency})", done=len(traces), total=total)

    threads = [threading.Thread(target=client, name=f"zhisuan-llm-{c}", daemon=True) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    ordered = [traces[i] for i in sorted(traces)]
    return summarize_requests(ordered, concurrency=concurrency), ordered


# ---------------------------------------------------------------------------------------------
# The same requests under MLPerf LoadGen with token latencies


@dataclass(frozen=True)
class LlmLoadGenResult(Record):
    """A LoadGen run of LLM requests with ``use_token_latencies``: LoadGen's own TTFT/TPOT/tokens/s."""

    scenario: Scenario
    valid: bool
    result_validity: str | None
    samples_per_s: float | None
    tokens_per_s: float | None
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    latency_ms: dict[str, float]
    query_count: int | None
    settings: dict[str, Any]
    attempts: tuple[dict[str, Any], ...]
    log_dir: str | None
    early_stopping: str | None
    duration_s: float


class _TokenSut:
    """Runs each query sample as one streamed request: FirstTokenComplete, then QuerySamplesComplete."""

    def __init__(self, lg: Any, decoder: KvDecoder, prompts: Sequence[np.ndarray], max_new_tokens: int) -> None:
        self.lg = lg
        self.decoder = decoder
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.errors: list[str] = []
        self.completed = 0

    def issue_queries(self, query_samples: Sequence[Any]) -> None:
        lg = self.lg
        for sample in query_samples:
            first = np.zeros(1, dtype=np.int64)

            def on_chunk(step: int, tokens: list[int], _t: float, sample: Any = sample, first: Any = first) -> None:
                if step == 0:
                    first[0] = tokens[0]
                    lg.FirstTokenComplete([lg.QuerySampleResponse(sample.id, first.ctypes.data, first.nbytes, 1)])

            try:
                trace = self.decoder.stream(self.prompts[sample.index], self.max_new_tokens, on_chunk=on_chunk)
            except Exception as exc:  # never let an exception cross into LoadGen's thread
                self.errors.append(f"{type(exc).__name__}: {exc}")
                lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0, 0)])
                continue
            out = np.asarray(trace.tokens, dtype=np.int64)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, out.ctypes.data, out.nbytes, len(out))])
            self.completed += 1

    def flush_queries(self) -> None:
        return None


def loadgen_token_run(
    runtime: Any,
    prompts: Sequence[np.ndarray],
    max_new_tokens: int,
    *,
    request_s: float,
    scenario: Scenario | str = "offline",
    min_duration_s: float = 2.0,
    log_dir: str | Path | None = None,
    seed: int = 0,
    progress: Progress = no_progress,
) -> LlmLoadGenResult:
    """Serve ``prompts`` under LoadGen with ``use_token_latencies`` (Offline or SingleStream).

    ``request_s`` is a measured end-to-end time of one request (e.g. the median of
    :func:`measure_requests`), used to size the run: Offline expects 1.5x its rate; SingleStream
    expects half its latency and runs 64 queries (LoadGen's early-stopping minimum). One rerun with
    settings corrected from LoadGen's numbers when the first is INVALID.
    """
    from zhisuan.bench.loadgen import (
        EARLY_STOPPING_MIN_QUERIES,
        OFFLINE_QPS_MARGIN,
        LoadGenSettings,
        LoadGenSummary,
        Scenario,
        ScenarioPlan,
        adjust_plan,
        import_loadgen,
        read_mllog,
    )

    scenario = Scenario.parse(scenario)
    if scenario not in (Scenario.OFFLINE, Scenario.SINGLESTREAM):
        raise UserError(f"LLM LoadGen runs are offline or singlestream, not {scenario!r}")
    if request_s <= 0:
        raise UserError(f"request_s must be > 0, got {request_s}")
    lg = import_loadgen()
    decoder = KvDecoder(runtime)
    duration_ms = round(min_duration_s * 1e3)
    if scenario == Scenario.OFFLINE:
        settings = LoadGenSettings(Scenario.OFFLINE, min_duration_ms=duration_ms, min_query_count=1,
                                   offline_expected_qps=round(OFFLINE_QPS_MARGIN / request_s, 4),
                                   use_token_latencies=True, seed=seed)
        expected_s = min_duration_s * OFFLINE_QPS_MARGIN * 1.1
    else:
        queries = EARLY_STOPPING_MIN_QUERIES[Scenario.SINGLESTREAM]
        settings = LoadGenSettings(Scenario.SINGLESTREAM, min_duration_ms=duration_ms, min_query_count=queries,
                                   single_stream_expected_latency_ns=max(1, int(0.5 * request_s * 1e9)),
                                   use_token_latencies=True, seed=seed)
        expected_s = max(min_duration_s, queries * request_s)
    plan = ScenarioPlan(settings, 1, 0.0, expected_s, (f"one request measured at {request_s * 1e3:.4g} ms",))
    start = time.perf_counter()
    attempts: list[dict[str, Any]] = []
    summary: LoadGenSummary | None = None
    final_dir: Path | None = None
    for attempt in (1, 2):
        work = Path(tempfile.mkdtemp(prefix="zhisuan-llm-loadgen-"))
        sut_impl = _TokenSut(lg, decoder, list(prompts), max_new_tokens)
        sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
        n = len(prompts)
        qsl = lg.ConstructQSL(n, n, lambda _i: None, lambda _i: None)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(work)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        progress(f"LLM LoadGen {scenario}" + (" (rerun)" if attempt == 2 else ""), done=0, total=1)
        t0 = time.perf_counter()
        try:
            lg.StartTestWithLogSettings(sut, qsl, plan.settings.test_settings(lg), log_settings)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        wall = time.perf_counter() - t0
        progress(f"LLM LoadGen {scenario}", done=1, total=1)
        summary = LoadGenSummary.from_entries(read_mllog(work))
        if log_dir is not None:
            final_dir = Path(log_dir) / f"{scenario}-attempt{attempt}"
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            if final_dir.exists():
                shutil.rmtree(final_dir)
            shutil.move(str(work), str(final_dir))
        else:
            shutil.rmtree(work, ignore_errors=True)
        attempts.append({**plan.to_dict(), "result_validity": summary.validity, "wall_s": wall,
                         "invalid_reason": summary.invalid_reason or None,
                         "log_dir": str(final_dir) if final_dir else None})
        if sut_impl.errors:
            raise UserError(f"the model failed during the LLM LoadGen run: {sut_impl.errors[0]}")
        if summary.valid or attempt == 2:
            break
        adjusted = adjust_plan(plan, summary)
        if adjusted is None:
            break
        plan = adjusted
    if summary is None:
        raise InternalError("no LoadGen run happened")

    def ms(d: Mapping[str, float]) -> dict[str, float]:
        return {k: v / 1e6 for k, v in d.items()}

    return LlmLoadGenResult(
        scenario=scenario,
        valid=summary.valid,
        result_validity=summary.validity,
        samples_per_s=summary.samples_per_s,
        tokens_per_s=summary.tokens_per_s,
        ttft_ms=ms(summary.first_token_latency_ns),
        tpot_ms=ms(summary.time_per_output_token_ns),
        latency_ms=ms(summary.latency_ns),
        query_count=summary.query_count,
        settings={**plan.settings.to_dict(), "effective": summary.effective},
        attempts=tuple(attempts),
        log_dir=str(Path(log_dir)) if log_dir is not None else None,
        early_stopping=summary.early_stopping_result or None,
        duration_s=time.perf_counter() - start,
    )
