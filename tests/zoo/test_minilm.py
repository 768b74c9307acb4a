"""minilm-l6: tokenizer, strict weight loading, pooling, retrieval metric, and the real model end to end."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import numpy as np
import pytest
import torch

from zhisuan import zoo
from zhisuan.errors import UserError
from zhisuan.runtime import load_runtime
from zhisuan.zoo.models import minilm

TINY = minilm.BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
    max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
)


def _tiny_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return minilm.new_module(TINY).eval()


# --- tokenizer ------------------------------------------------------------------------------------


def test_tokenizer_does_not_pad_to_128_and_pads_a_batch_to_its_longest() -> None:
    tok = minilm.tokenizer()
    short, long = "A cat.", "The quick brown fox jumps over the lazy dog near the river bank today."
    ids_short, ids_long = tok.encode([short, long])
    assert len(ids_short) < len(ids_long) < 128
    assert ids_short[0] == tok.encode(["x"])[0][0]  # [CLS] first
    batch = tok([short, long])
    assert batch["input_ids"].shape == (2, len(ids_long)) and batch["input_ids"].dtype == np.int64
    assert batch["attention_mask"].sum(axis=1).tolist() == [len(ids_short), len(ids_long)]
    assert batch["input_ids"][0, len(ids_short):].tolist() == [tok.pad_id] * (len(ids_long) - len(ids_short))
    assert tok([short])["input_ids"].shape == (1, len(ids_short))


def test_tokenizer_truncates_at_256_tokens() -> None:
    ids = minilm.tokenizer().encode(["word " * 400])[0]
    assert len(ids) == minilm.MAX_TOKENS


# --- strict loading ---------------------------------------------------------------------------------


def test_strict_loading_accepts_exact_keys_and_the_unused_pooler() -> None:
    source = _tiny_encoder().state_dict()
    target = minilm.new_module(TINY)
    extra = {"pooler.dense.weight": torch.zeros(16, 16), "embeddings.position_ids": torch.arange(64)[None]}
    minilm.load_weights(target, {**source, **extra})
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.items())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("encoder.layer.1.output.LayerNorm.weight"), "missing 1 key"),
        (lambda s: s.__setitem__("encoder.layer.9.bias", torch.zeros(1)), "unexpected 1 key"),
        (lambda s: s.__setitem__("embeddings.word_embeddings.weight", torch.zeros(49, 16)), "shape mismatch"),
    ],
)
def test_strict_loading_refuses_missing_unknown_and_misshapen_keys(change, message) -> None:
    state = dict(_tiny_encoder().state_dict())
    change(state)
    with pytest.raises(UserError, match=message):
        minilm.load_weights(minilm.new_module(TINY), state)


def test_config_rejects_an_unsupported_activation(tmp_path) -> None:
    config = {name: getattr(TINY, name) for name in TINY.__dataclass_fields__} | {"hidden_act": "relu"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="hidden_act"):
        minilm.BertConfig.from_json(tmp_path / "config.json")


# --- the graph: padding must not change an embedding -------------------------------------------------


def test_embedding_ignores_padding_and_is_unit_length() -> None:
    module = _tiny_encoder()
    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0], [1, 3, 4, 6, 8, 10, 2]])
    mask = (torch.arange(7)[None] < torch.tensor([[5], [7]])).long()
    with torch.inference_mode():
        batch = module(ids, mask)
        alone = module(ids[:1, :5], mask[:1, :5])
        one_masked = module(ids[:1, :5], torch.tensor([[1, 1, 0, 1, 1]]))
    torch.testing.assert_close(batch[0], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(2), atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)
    assert not torch.allclose(alone, one_masked, atol=1e-3)  # the mask reaches attention and pooling


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_copy_runs_in_its_own_dtype(dtype) -> None:
    module = _tiny_encoder()
    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0], [1, 3, 4, 6, 8, 10, 2]])
    mask = (torch.arange(7)[None] < torch.tensor([[5], [7]])).long()
    with torch.inference_mode():
        reference = module(ids, mask)
        half = module.to(dtype)(ids, mask)
    assert half.dtype == dtype
    cosine = torch.nn.functional.cosine_similarity(half.float(), reference, dim=1)
    assert (cosine > 0.99).all(), cosine


# --- metric and data ----------------------------------------------------------------------------------


def test_retrieval_scores_on_hand_made_embeddings() -> None:
    docs = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0.28, 0.96]], dtype=np.float32)
    # query 0 -> doc 0 (rank 1); query 1 -> doc 1 (0.8 vs 0.6, rank 1); query 2 -> gold doc 1 (rank 2)
    scores = minilm.retrieval_scores(queries, docs, [0, 1, 1])
    assert scores["recall_at_1"] == pytest.approx(2 / 3)
    assert scores["mrr"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert scores["mean_cosine_pos"] == pytest.approx((1 + 0.8 + 0.28) / 3)


def test_retrieval_set_is_sixty_distinct_pairs() -> None:
    data = json.loads(resources.files("zhisuan.zoo.data").joinpath("retrieval.json").read_text(encoding="utf-8"))
    pairs = data["pairs"]
    assert len(pairs) == 60 == len(minilm.retrieval_pairs())
    for key in ("id", "query", "document"):
        assert len({p[key] for p in pairs}) == 60
    assert len({p["topic"] for p in pairs}) == 20


# --- the real model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported():
    return zoo.export("minilm-l6")


@pytest.mark.slow
def test_onnx_matches_the_torch_reference(exported) -> None:
    texts = [p["query"] for p in minilm.retrieval_pairs()[:12]]
    enc = minilm.tokenizer()(texts)
    module = minilm.torch_model().module
    with torch.inference_mode():
        want = module(*(torch.from_numpy(enc[n]) for n in minilm.INPUT_NAMES)).numpy()
    with load_runtime(exported.path, "onnxruntime", intra_op_threads=2) as rt:
        got = rt.run(enc)["sentence_embedding"]
        assert [s.name for s in rt.inputs()] == ["input_ids", "attention_mask"]
    assert got.shape == (12, minilm.EMBEDDING_DIM)
    assert float(np.abs(got - want).max()) < 1e-5


@pytest.mark.slow
def test_retrieval_recall_on_onnxruntime_and_on_a_copied_file(exported, tmp_path) -> None:
    result = zoo.evaluate("minilm-l6", intra_op_threads=2)
    assert result.metric == "recall_at_1" and result.samples == 60
    assert result.value >= 0.95  # measured 1.0
    assert result.secondary["mrr"] >= 0.97  # measured 1.0
    assert 0.55 < result.secondary["mean_cosine_pos"] < 0.75  # measured 0.636
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(exported.path, copy)
    again = zoo.evaluate("minilm-l6", model=copy, intra_op_threads=2)
    assert again.value == result.value
    assert again.secondary["mean_cosine_pos"] == pytest.approx(result.secondary["mean_cosine_pos"], abs=1e-6)
    subset = zoo.evaluate("minilm-l6", model=copy, samples=20, seed=3)
    assert subset.samples == 20 and 0.0 <= subset.value <= 1.0


@pytest.mark.slow
def test_torch_runtime_gives_the_same_scores(exported) -> None:
    onnx_result = zoo.evaluate("minilm-l6", intra_op_threads=2)
    torch_result = zoo.evaluate("minilm-l6", runtime="torch", intra_op_threads=2)
    assert torch_result.value == onnx_result.value
    assert torch_result.secondary["mrr"] == pytest.approx(onnx_result.secondary["mrr"], abs=1e-9)
    assert torch_result.secondary["mean_cosine_pos"] == pytest.approx(
        onnx_result.secondary["mean_cosine_pos"], abs=1e-5
    )


def test_too_many_samples_is_a_user_error() -> None:
    class NoRun:
        def inputs(self):
            raise AssertionError("must fail before running")

    with pytest.raises(UserError, match=r"1\.\.60"):
        minilm.evaluate(NoRun(), zoo.EvalOptions(samples=61))  # type: ignore[arg-type]
