"""Seeded reference architectures: sizes, determinism, ONNX export, KV-cache decoding, fidelity eval."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from zhisuan.runtime import load_runtime
from zhisuan.zoo.models import reference as R

torch = pytest.importorskip("torch")

TINY_GPT2 = R.Gpt2Config(vocab_size=97, positions=64, hidden=32, layers=2, heads=4)
TINY_BERT = R.BertConfig(vocab_size=211, hidden=32, layers=2, heads=4, intermediate=64, max_positions=64)


def _state_digest(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def resnet50():
    return R.build_resnet50()


# --- architectures -----------------------------------------------------------------------------


def test_parameter_counts(resnet50) -> None:
    assert R.parameter_count(resnet50) == 25_557_032
    assert R.parameter_count(R.build_bert()) == 109_482_240
    gpt2 = R.build_gpt2()
    assert R.parameter_count(gpt2) == 124_439_808  # lm_head is tied to the token embedding
    assert gpt2.wte.weight.data_ptr() == gpt2.wte.weight.data_ptr()


def test_resnet50_batchnorm_is_calibrated_and_outputs_vary(resnet50) -> None:
    bns = [m for m in resnet50.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 53
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    assert all(not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean)) for bn in bns)
    with torch.no_grad():
        logits = resnet50(torch.from_numpy(R.structured_images(8, seed=5)))
    assert torch.isfinite(logits).all()
    assert len(set(logits.argmax(-1).tolist())) >= 5  # the argmax depends on the input


def test_weights_are_deterministic_across_processes(resnet50) -> None:
    code = (
        "import hashlib, sys, torch\n"
        "torch.set_num_threads(int(sys.argv[1]))  # float reductions of the BN statistics depend on it\n"
        "sys.path[:0] = [p for p in sys.argv[2:]]\n"
        "from zhisuan.zoo.models import reference as R\n"
        "from test_reference import _state_digest, TINY_BERT, TINY_GPT2\n"
        "print(_state_digest(R.build_resnet50()))\n"
        "print(_state_digest(R.build_bert(TINY_BERT)))\n"
        "print(_state_digest(R.build_gpt2(TINY_GPT2)))\n"
    )
    here = str(Path(__file__).parent)
    torch.manual_seed(12345)  # the global RNG must not matter
    expected = [_state_digest(resnet50), _state_digest(R.build_bert(TINY_BERT)), _state_digest(R.build_gpt2(TINY_GPT2))]
    threads = str(torch.get_num_threads())
    out = subprocess.run([sys.executable, "-c", code, threads, here], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == expected
    assert _state_digest(R.build_gpt2(TINY_GPT2, seed=1)) != expected[2]


# --- ResNet-50 through the zoo -----------------------------------------------------------------


@pytest.mark.slow
def test_resnet50_export_matches_torch_and_scores_itself(resnet50) -> None:
    from zhisuan import zoo

    exported = zoo.export("resnet50")
    model = onnx.load(str(exported.path), load_external_data=False)
    assert {i.name for i in model.graph.input} == {"image"}
    assert [o.name for o in model.graph.output] == ["logits"]
    images = R.structured_images(2, seed=11)
    with load_runtime(exported.path) as rt:
        onnx_logits = rt.run({"image": images})["logits"]
    with torch.no_grad():
        torch_logits = resnet50(torch.from_numpy(images)).numpy()
    assert onnx_logits.shape == (2, 1000)
    assert np.abs(onnx_logits - torch_logits).max() < 1e-3  # measured 3e-5

    result = zoo.evaluate("resnet50", samples=4, seed=0)
    assert result.metric == "top1_agreement" and result.value == 1.0
    assert result.secondary["mean_cosine"] > 0.99999


def test_fidelity_metric_drops_for_a_perturbed_model(resnet50) -> None:
    """The evaluator really compares against the reference: noise in the candidate lowers it."""
    model = R.TorchModel(copy.deepcopy(resnet50), ("image",), ("logits",), R.RESNET_INPUTS)
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(torch.randn_like(p) * p.std() * 0.5)
    from zhisuan.zoo.base import EvalOptions

    result = R._evaluate_resnet50(load_runtime(model, "torch"), EvalOptions(samples=4, seed=0))
    assert result.secondary["mean_cosine"] < 0.99
    assert 0.0 <= result.value <= 1.0


# --- GPT-2: KV cache -----------------------------------------------------------------------------


def _full_forward_logits(runner, ids: np.ndarray, config: R.Gpt2Config) -> np.ndarray:
    batch, length = ids.shape
    empty = np.zeros((batch, config.heads, 0, config.head_dim), dtype=np.float32)
    inputs, _ = R.gpt2_names(config)
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((batch, length), dtype=np.int64),
        "position_ids": np.tile(np.arange(length, dtype=np.int64), (batch, 1)),
        **{name: empty for name in inputs[3:]},
    }
    return runner.run(feeds, ["logits"])["logits"]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2") / "tiny.onnx"
    R.export_gpt2(path, TINY_GPT2)
    return R.gpt2_torch_model(TINY_GPT2), path


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_kv_cache_decode_equals_full_forward(tiny_gpt2, backend) -> None:
    torch_model, path = tiny_gpt2
    runner = load_runtime(torch_model, "torch") if backend == "torch" else load_runtime(path)
    prompts = R.gpt2_prompts(2, 5, seed=0, vocab_size=TINY_GPT2.vocab_size)
    gen = R.generate(runner, prompts, 6, keep_logits=True)
    assert gen.tokens.shape == (2, 6) and gen.logits is not None
    assert len(gen.step_s) == 6 and gen.ttft_s > 0 and gen.tpot_s is not None
    # the whole sequence at once, no cache: logits at positions 4.. predict the same tokens
    sequence = np.concatenate([prompts, gen.tokens[:, :-1]], axis=1)
    full = _full_forward_logits(runner, sequence, TINY_GPT2)[:, 4:]
    np.testing.assert_allclose(gen.logits, full, atol=2e-5, rtol=1e-4)
    np.testing.assert_array_equal(gen.tokens, full.argmax(-1))


def test_onnx_kv_cache_matches_torch_and_keeps_dynamic_axes(tiny_gpt2) -> None:
    torch_model, path = tiny_gpt2
    prompts = R.gpt2_prompts(3, 4, seed=1, vocab_size=TINY_GPT2.vocab_size)
    with load_runtime(path) as rt:
        specs = {s.name: s for s in rt.inputs()}
        assert specs["past_key_values.1.value"].shape == ("batch", 4, "past_sequence", 8)
        onnx_gen = R.generate(rt, prompts, 5, keep_logits=True)
    torch_gen = R.generate(load_runtime(torch_model, "torch"), prompts, 5, keep_logits=True)
    np.testing.assert_array_equal(onnx_gen.tokens, torch_gen.tokens)
    np.testing.assert_allclose(onnx_gen.logits, torch_gen.logits, atol=1e-5)


def test_attention_mask_hides_left_padding(tiny_gpt2) -> None:
    torch_model, _ = tiny_gpt2
    runner = load_runtime(torch_model, "torch")
    ids = R.gpt2_prompts(1, 4, seed=2, vocab_size=TINY_GPT2.vocab_size)
    inputs, _ = R.gpt2_names(TINY_GPT2)
    empty = np.zeros((1, 4, 0, 8), dtype=np.float32)
    plain = _full_forward_logits(runner, ids, TINY_GPT2)[0, -1]
    padded_ids = np.concatenate([np.array([[7, 9]]), ids], axis=1)
    feeds = {
        "input_ids": padded_ids,
        "attention_mask": np.array([[0, 0, 1, 1, 1, 1]]),
        "position_ids": np.array([[0, 0, 0, 1, 2, 3]]),
        **{n: empty for n in inputs[3:]},
    }
    np.testing.assert_allclose(runner.run(feeds, ["logits"])["logits"][0, -1], plain, atol=1e-5)


def test_forced_tokens_drive_the_cache(tiny_gpt2) -> None:
    torch_model, _ = tiny_gpt2
    runner = load_runtime(torch_model, "torch")
    prompts = R.gpt2_prompts(1, 3, seed=3, vocab_size=TINY_GPT2.vocab_size)
    forced = np.array([[5, 6, 7, 8]])
    gen = R.generate(runner, prompts, 4, forced_tokens=forced, keep_logits=True)
    full = _full_forward_logits(runner, np.concatenate([prompts, forced[:, :-1]], axis=1), TINY_GPT2)[:, 2:]
    np.testing.assert_allclose(gen.logits, full, atol=2e-5)


# --- BERT --------------------------------------------------------------------------------------


def test_bert_export_is_fusable_and_matches_torch(tmp_path) -> None:
    path = tmp_path / "bert.onnx"
    R.export_bert(path, TINY_BERT)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"LayerNormalization", "Erf", "Softmax", "MatMul"} <= ops
    inputs = R.bert_inputs(3, 12, seed=0, vocab_size=TINY_BERT.vocab_size)
    expected = load_runtime(R.bert_torch_model(TINY_BERT), "torch").run(inputs)
    with load_runtime(path) as rt:
        got = rt.run(inputs)
        # padded positions do not change the real tokens' outputs
        altered = dict(inputs, input_ids=np.where(inputs["attention_mask"] == 1, inputs["input_ids"], 3))
        again = rt.run(altered)
    for name in R.BERT_OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    valid = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(again["last_hidden_state"][valid], got["last_hidden_state"][valid], atol=1e-5)


def test_cosine_rows() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_allclose(R.cosine_rows(a, b), [0.0, 1.0, -1.0])


def test_entries_describe_the_kv_cache() -> None:
    from zhisuan import zoo

    entry = zoo.get("gpt2-small")
    assert entry.kind == "random-init" and entry.weights is None and entry.torch_model is not None
    kv = entry.metadata["kv_cache"]
    assert kv["layout"] == "[batch, num_heads, past_sequence, head_dim]"
    assert entry.metadata["num_layers"] == 12
    inputs, outputs = R.gpt2_names()
    assert len(inputs) == 3 + 24 and outputs[1] == "present.0.key"
    assert {e.name for e in zoo.entries()} >= {"resnet50", "bert-base", "gpt2-small", "silero-vad"}
