"""LLM token metrics: exact definitions on fake timestamps, and real streaming on a tiny GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from loadgen_helpers import mlp_onnx

from zhisuan.bench.llm import (
    DEFINITIONS,
    KvDecoder,
    RequestTrace,
    loadgen_token_run,
    measure_requests,
    stats_ms,
    summarize_requests,
)
from zhisuan.errors import UserError
from zhisuan.runtime import load_runtime


def test_ttft_tpot_itl_e2e_from_timestamps() -> None:
    # request starts at 10.0 s; chunks of 1, 2 and 1 tokens at 10.25, 10.30, 10.45
    t = RequestTrace(start_s=10.0, chunk_s=(10.25, 10.30, 10.45), chunk_tokens=(1, 2, 1), prompt_tokens=7)
    assert t.output_tokens == 4
    assert t.ttft_s == pytest.approx(0.25)
    assert t.e2e_s == pytest.approx(0.45)
    assert t.tpot_s == pytest.approx((0.45 - 0.25) / 3)  # (e2e - ttft) / (tokens - 1), not per chunk
    assert t.itl_s == pytest.approx((0.05, 0.15))  # gaps between chunks
    assert t.tokens_per_s == pytest.approx(4 / 0.45)
    d = t.to_dict()
    assert d["ttft_ms"] == pytest.approx(250.0) and d["itl_ms"] == pytest.approx([50.0, 150.0])


def test_single_token_answer_has_no_tpot_or_itl() -> None:
    t = RequestTrace(0.0, (0.5,), (1,))
    assert t.tpot_s is None and t.itl_s == () and t.ttft_s == t.e2e_s == 0.5


@pytest.mark.parametrize(
    ("chunks", "tokens", "message"),
    [((), (), "at least one chunk"), ((1.0, 0.5), (1, 1), "back in time"), ((1.0,), (0,), "at least one token"),
     ((1.0,), (1, 1), "one token count per chunk")],
)
def test_bad_traces_are_refused(chunks: tuple, tokens: tuple, message: str) -> None:
    with pytest.raises(UserError, match=message):
        RequestTrace(0.0, chunks, tokens)


def test_summary_percentiles_and_overall_tokens_per_second() -> None:
    traces = [
        RequestTrace(0.0, (0.1, 0.2, 0.3), (1, 1, 1)),  # ttft 0.1, tpot 0.1, itl 0.1 0.1
        RequestTrace(0.5, (0.7, 0.8), (1, 3)),  # ttft 0.2, tpot 0.1/3, itl 0.1
        RequestTrace(1.0, (1.4,), (1,)),  # ttft 0.4, no tpot
    ]
    m = summarize_requests(traces, concurrency=1)
    assert m.requests == 3 and m.output_tokens == 8
    assert m.wall_s == pytest.approx(1.4)  # first start 0.0 to last chunk 1.4
    assert m.output_tokens_per_s == pytest.approx(8 / 1.4)
    assert m.requests_per_s == pytest.approx(3 / 1.4)
    assert m.ttft_ms["count"] == 3 and m.ttft_ms["p50"] == pytest.approx(200.0)
    assert m.ttft_ms["p90"] == pytest.approx(float(np.percentile([100, 200, 400], 90)))
    assert m.tpot_ms["count"] == 2 and m.tpot_ms["mean"] == pytest.approx((100 + 100 / 3) / 2)
    assert m.itl_ms["count"] == 3 and m.itl_ms["max"] == pytest.approx(100.0)
    assert m.e2e_latency_ms["max"] == pytest.approx(400.0)
    assert m.request_tokens_per_s["min"] == pytest.approx(1 / 0.4)
    assert set(DEFINITIONS) <= set(m.definitions)
    json.dumps(m.to_dict())
    assert stats_ms([]) == {"count": 0}
    with pytest.raises(UserError):
        summarize_requests([])


# ---------------------------------------------------------------------------------------------
# real decoding on a tiny GPT-2 exported in the test


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from zhisuan.zoo.models.reference import Gpt2Config, export_gpt2

    path = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2.onnx"
    export_gpt2(path, Gpt2Config(vocab_size=64, positions=64, hidden=32, layers=2, heads=2))
    return path


def test_streamed_tokens_match_the_zoo_decoder_and_timestamps_are_monotonic(tiny_gpt2: Path) -> None:
    from zhisuan.zoo.models.reference import generate

    prompt = np.array([5, 9, 2, 33, 17], dtype=np.int64)
    seen: list[tuple[int, list[int], float]] = []
    with load_runtime(tiny_gpt2, "onnxruntime", intra_op_threads=1) as rt:
        trace = KvDecoder(rt).stream(prompt, 6, on_chunk=lambda step, toks, t: seen.append((step, toks, t)))
        expected = generate(rt, prompt[None], 6).tokens[0].tolist()
    assert list(trace.tokens) == expected  # same greedy tokens as zhisuan.zoo.models.reference.generate
    assert [s for s, _, _ in seen] == list(range(6)) and [tok for _, (tok,), _ in seen] == expected
    assert trace.chunk_s == tuple(t for _, _, t in seen)
    assert trace.start_s < trace.chunk_s[0] and trace.output_tokens == 6 and trace.prompt_tokens == 5


def test_concurrent_streams_serve_every_request(tiny_gpt2: Path) -> None:
    prompts = np.random.default_rng(0).integers(0, 64, (5, 4))
    with load_runtime(tiny_gpt2, "onnxruntime", intra_op_threads=1) as rt:
        m, traces = measure_requests(rt, prompts, 4, concurrency=2)
    assert m.requests == 5 and m.concurrency == 2 and m.output_tokens == 20 and len(traces) == 5
    assert all(t.output_tokens == 4 for t in traces)
    assert m.ttft_ms["p50"] > 0 and m.tpot_ms["count"] == 5 and m.itl_ms["count"] == 15


def test_the_kv_signature_is_required(tmp_path: Path) -> None:
    with load_runtime(mlp_onnx(tmp_path / "mlp.onnx", hidden=8), "onnxruntime") as rt, \
            pytest.raises(UserError, match="KV-cache signature"):
        KvDecoder(rt)


def test_loadgen_token_latencies_run_valid(tiny_gpt2: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlperf_loadgen")
    prompts = list(np.random.default_rng(1).integers(0, 64, (6, 4)))
    with load_runtime(tiny_gpt2, "onnxruntime", intra_op_threads=1) as rt:
        m, _ = measure_requests(rt, prompts, 5)
        result = loadgen_token_run(rt, prompts, 5, request_s=float(m.e2e_latency_ms["p50"]) / 1e3,
                                   min_duration_s=0.3, log_dir=tmp_path / "lg")
    assert result.valid, result.attempts
    assert result.tokens_per_s and result.tokens_per_s > 0
    # LoadGen counted the tokens the SUT reported: 5 per sample
    assert result.tokens_per_s == pytest.approx(5 * result.samples_per_s, rel=0.02)
    assert (tmp_path / "lg" / "offline-attempt1" / "mlperf_log_detail.txt").is_file()
    assert result.settings["use_token_latencies"] is True
    with pytest.raises(UserError, match="offline or singlestream"):
        loadgen_token_run(rt, prompts, 5, request_s=0.1, scenario="server")


def test_loadgen_singlestream_reports_ttft_and_tpot_like_ours(tiny_gpt2: Path) -> None:
    pytest.importorskip("mlperf_loadgen")
    prompts = list(np.random.default_rng(2).integers(0, 64, (8, 4)))
    with load_runtime(tiny_gpt2, "onnxruntime", intra_op_threads=1) as rt:
        ours, _ = measure_requests(rt, prompts, 6)
        result = loadgen_token_run(rt, prompts, 6, request_s=float(ours.e2e_latency_ms["p50"]) / 1e3,
                                   scenario="singlestream", min_duration_s=0.2)
    assert result.valid, result.attempts
    assert result.query_count is not None and result.query_count >= 64
    ttft, tpot = result.ttft_ms, result.tpot_ms
    assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"] and 0 < tpot["p50"] <= tpot["p99"]
    # LoadGen times TPOT as (end - first token) / (tokens - 1) too: same order as ours on the same model
    assert 0.2 < tpot["p50"] / float(ours.tpot_ms["p50"]) < 5
