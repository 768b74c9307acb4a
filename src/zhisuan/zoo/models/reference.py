"""Reference architectures built in code with seeded random weights: ResNet-50, BERT-base, GPT-2 small.

They are the standard shapes that accelerators are judged on. Their weights are random (seeded,
so every process rebuilds exactly the same model), so their metrics measure fidelity to the
PyTorch FP32 reference, not task accuracy: argmax agreement and cosine similarity of outputs on a
seeded evaluation set. Reference outputs are cached as ``.npz`` next to the zoo cache.

GPT-2 is exported with a KV cache: feed ``past_key_values.{i}.key/value`` of past length 0 for the
prefill and the previous ``present.{i}.*`` afterwards; :func:`generate` does exactly that.

>>> from zhisuan import zoo
>>> zoo.evaluate("resnet50").value  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan._io import atomic_write, cache_dir
from zhisuan.errors import UserError
from zhisuan.progress import Progress
from zhisuan.runtime import load_runtime
from zhisuan.runtime.base import TensorSpec, TorchModel
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    Feed,
    ScoredSamples,
    Split,
    SuiteRun,
    ZooEntry,
)

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime

WEIGHT_SEED = 0  # the weights; the evaluation seed (EvalOptions.seed) only picks the inputs
DEFAULT_OPSET = 17  # LayerNormalization is an ONNX op from 17 on
LICENSE = "Apache-2.0 (zhisuan code)"
ARCHITECTURE_SOURCE = "zhisuan (built in code)"
EXPORTER = "torch.onnx.export(dynamo=False)"  # the TorchScript exporter: fast and reliable for these graphs


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


@dataclass(frozen=True)
class Gpt2Config:
    vocab_size: int = 50257
    positions: int = 1024
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


BERT_BASE = BertConfig()
GPT2_SMALL = Gpt2Config()


# --- PyTorch modules (torch is imported only when a model is built) ------------------------


@cache
def _nn() -> SimpleNamespace:
    """The architectures' ``nn.Module`` classes, defined on first use so listing the zoo never imports torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Bottleneck(nn.Module):
        """ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            out = planes * self.expansion
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            return F.relu(self.bn3(self.conv3(y)) + identity)

    class ResNet50(nn.Module):
        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            inplanes = 64
            stages = []
            for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                layers = []
                for i in range(blocks):
                    layers.append(Bottleneck(inplanes, planes, stride if i == 0 else 1))
                    inplanes = planes * Bottleneck.expansion
                stages.append(nn.Sequential(*layers))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.fc = nn.Linear(inplanes, num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(image))

    class BertLayer(nn.Module):
        """Post-LN encoder layer in the pattern ONNX Runtime's BERT fusion recognises."""

        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.heads, self.head_dim = c.heads, c.hidden // c.heads
            self.query = nn.Linear(c.hidden, c.hidden)
            self.key = nn.Linear(c.hidden, c.hidden)
            self.value = nn.Linear(c.hidden, c.hidden)
            self.attention_output = nn.Linear(c.hidden, c.hidden)
            self.attention_norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
            self.intermediate = nn.Linear(c.hidden, c.intermediate)
            self.output = nn.Linear(c.intermediate, c.hidden)
            self.output_norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

        def _split(self, x: torch.Tensor) -> torch.Tensor:
            return x.view((*x.size()[:-1], self.heads, self.head_dim)).permute(0, 2, 1, 3)

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
            context = context.view((*context.size()[:-2], self.heads * self.head_dim))
            x = self.attention_norm(self.attention_output(context) + x)
            return self.output_norm(self.output(F.gelu(self.intermediate(x))) + x)

    class Bert(nn.Module):
        def __init__(self, c: BertConfig) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden)
            self.position_embeddings = nn.Embedding(c.max_positions, c.hidden)
            self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden)
            self.embeddings_norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
            self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.layers))
            self.pooler = nn.Linear(c.hidden, c.hidden)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            positions = torch.arange(input_ids.size(1), dtype=torch.long, device=input_ids.device).unsqueeze(0)
            x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
            x = self.embeddings_norm(x + self.position_embeddings(positions))
            additive_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, additive_mask)
            return x, torch.tanh(self.pooler(x[:, 0]))

    class Gpt2Block(nn.Module):
        def __init__(self, c: Gpt2Config) -> None:
            super().__init__()
            self.heads, self.head_dim = c.heads, c.head_dim
            self.ln_1 = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
            self.c_attn = nn.Linear(c.hidden, 3 * c.hidden)
            self.attn_proj = nn.Linear(c.hidden, c.hidden)
            self.ln_2 = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)
            self.c_fc = nn.Linear(c.hidden, 4 * c.hidden)
            self.mlp_proj = nn.Linear(4 * c.hidden, c.hidden)

        def _split(self, x: torch.Tensor) -> torch.Tensor:
            return x.view((*x.size()[:-1], self.heads, self.head_dim)).permute(0, 2, 1, 3)

        def forward(
            self, x: torch.Tensor, additive_mask: torch.Tensor, past_key: torch.Tensor, past_value: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            q, k, v = self.c_attn(self.ln_1(x)).split(self.heads * self.head_dim, dim=2)
            q, k, v = self._split(q), self._split(k), self._split(v)
            key = torch.cat([past_key, k], dim=2)
            value = torch.cat([past_value, v], dim=2)
            scores = torch.matmul(q, key.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), value).permute(0, 2, 1, 3).contiguous()
            context = context.view((*context.size()[:-2], self.heads * self.head_dim))
            x = x + self.attn_proj(context)
            x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
            return x, key, value

    class Gpt2(nn.Module):
        """GPT-2 decoder whose forward is the ONNX signature: flat past in, logits and flat present out."""

        def __init__(self, c: Gpt2Config) -> None:
            super().__init__()
            self.wte = nn.Embedding(c.vocab_size, c.hidden)
            self.wpe = nn.Embedding(c.positions, c.hidden)
            self.blocks = nn.ModuleList(Gpt2Block(c) for _ in range(c.layers))
            self.ln_f = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            position_ids: torch.Tensor,
            *past_key_values: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            x = self.wte(input_ids) + self.wpe(position_ids)
            seq, total = input_ids.size(1), attention_mask.size(1)
            # query i sits at absolute position total - seq + i and sees keys 0..that position
            query_pos = torch.arange(seq, device=x.device) + (total - seq)
            causal = torch.arange(total, device=x.device)[None, :] <= query_pos[:, None]
            allowed = causal[None, None, :, :] & (attention_mask[:, None, None, :] > 0)
            additive_mask = (1.0 - allowed.to(x.dtype)) * -10000.0
            presents: list[torch.Tensor] = []
            for i, block in enumerate(self.blocks):
                x, key, value = block(x, additive_mask, past_key_values[2 * i], past_key_values[2 * i + 1])
                presents += [key, value]
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied with the token embedding
            return (logits, *presents)

    return SimpleNamespace(torch=torch, nn=nn, ResNet50=ResNet50, Bert=Bert, Gpt2=Gpt2)


def _seeded_build(seed: int, make: Callable[[Any], Any]) -> Any:
    """Build under a private RNG so the weights depend only on ``seed`` (not on earlier torch calls)."""
    torch = _nn().torch
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make(generator)
    return module.eval()


def build_resnet50(seed: int = WEIGHT_SEED) -> Any:
    """ResNet-50 v1.5 (25.6 M parameters) with seeded weights and calibrated BatchNorm statistics.

    Convolutions are Kaiming-normal, BN scales and shifts random, and the running mean and
    variance are measured on eight seeded structured images in training mode, so every BN is a
    non-trivial affine map (Conv+BN folding and quantization then have work to do). The classifier
    bias centres the logits on those images, so the argmax depends on the input.
    """
    ns = _nn()
    torch, nn = ns.torch, ns.nn

    def make(g: Any) -> Any:
        model = ns.ResNet50()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.6, 1.4, generator=g)
                nn.init.normal_(m.bias, 0.0, 0.1, generator=g)
                m.momentum = None  # cumulative average over the calibration pass
                m.reset_running_stats()
        nn.init.normal_(model.fc.weight, 0.0, 0.02, generator=g)
        images = torch.from_numpy(structured_images(8, seed=seed + 1_000_003))
        with torch.no_grad():
            model.train()
            model(images)
            model.eval()
            mean_feature = model.features(images).mean(dim=0)
            model.fc.bias.copy_(-model.fc.weight @ mean_feature)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        return model

    return _seeded_build(seed, make)


def build_bert(config: BertConfig = BERT_BASE, seed: int = WEIGHT_SEED) -> Any:
    """BERT encoder (BERT-base: 109.5 M parameters) initialised as BERT is: N(0, 0.02), zero biases."""
    ns = _nn()
    nn = ns.nn

    def make(g: Any) -> Any:
        model = ns.Bert(config)
        _init_transformer(model, nn, g)
        return model

    return _seeded_build(seed, make)


def build_gpt2(config: Gpt2Config = GPT2_SMALL, seed: int = WEIGHT_SEED) -> Any:
    """GPT-2 decoder (small: 124.4 M parameters, tied embeddings) initialised as GPT-2 is.

    Residual projections get std 0.02 / sqrt(2 * layers), as in the GPT-2 paper.
    """
    ns = _nn()
    nn = ns.nn

    def make(g: Any) -> Any:
        model = ns.Gpt2(config)
        _init_transformer(model, nn, g)
        for block in model.blocks:
            for proj in (block.attn_proj, block.mlp_proj):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * config.layers), generator=g)
        return model

    return _seeded_build(seed, make)


def _init_transformer(model: Any, nn: Any, g: Any) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=g)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def parameter_count(module: Any) -> int:
    """Distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


# --- signatures and TorchModel references ---------------------------------------------------

RESNET_INPUTS = (TensorSpec("image", "float32", ("batch", 3, 224, 224)),)
BERT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
BERT_OUTPUT_NAMES = ("last_hidden_state", "pooler_output")


def gpt2_names(config: Gpt2Config = GPT2_SMALL) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Input and output names of the GPT-2 graph, in forward order."""
    past = [f"past_key_values.{i}.{kind}" for i in range(config.layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(config.layers) for kind in ("key", "value")]
    return ("input_ids", "attention_mask", "position_ids", *past), ("logits", *present)


def gpt2_input_specs(config: Gpt2Config = GPT2_SMALL) -> tuple[TensorSpec, ...]:
    names, _ = gpt2_names(config)
    kv = ("batch", config.heads, "past_sequence", config.head_dim)
    fixed = (
        TensorSpec("input_ids", "int64", ("batch", "sequence")),
        TensorSpec("attention_mask", "int64", ("batch", "total_sequence")),
        TensorSpec("position_ids", "int64", ("batch", "sequence")),
    )
    return fixed + tuple(TensorSpec(name, "float32", kv) for name in names[3:])


def resnet50_torch_model() -> TorchModel:
    return TorchModel(build_resnet50(), ("image",), ("logits",), RESNET_INPUTS)


def bert_torch_model(config: BertConfig = BERT_BASE) -> TorchModel:
    specs = tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in BERT_INPUT_NAMES)
    return TorchModel(build_bert(config), BERT_INPUT_NAMES, BERT_OUTPUT_NAMES, specs)


def gpt2_torch_model(config: Gpt2Config = GPT2_SMALL) -> TorchModel:
    inputs, outputs = gpt2_names(config)
    return TorchModel(build_gpt2(config), inputs, outputs, gpt2_input_specs(config))


# --- ONNX export ----------------------------------------------------------------------------


def export_onnx(
    model: TorchModel,
    example: Sequence[np.ndarray],
    out: Path,
    *,
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int | None = None,
) -> None:
    """Export ``model`` to ``out`` with the TorchScript exporter (``dynamo=False``).

    The legacy exporter traces these straight-line graphs in seconds and keeps dynamic axes
    through ``dynamic_axes``; its deprecation warnings are silenced here on purpose.
    """
    torch = _nn().torch
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(
                model.module,
                args,
                str(out),
                dynamo=False,
                opset_version=opset or DEFAULT_OPSET,
                input_names=list(model.input_names),
                output_names=list(model.output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                do_constant_folding=True,
            )


def export_resnet50(out: Path, opset: int | None = None) -> None:
    model = resnet50_torch_model()
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
    export_onnx(model, [structured_images(1, seed=7)], out, dynamic_axes=axes, opset=opset)


def export_bert(out: Path, config: BertConfig = BERT_BASE, opset: int | None = None) -> None:
    model = bert_torch_model(config)
    example = bert_inputs(2, 16, seed=7, vocab_size=config.vocab_size)
    axes = {n: {0: "batch", 1: "sequence"} for n in (*BERT_INPUT_NAMES, "last_hidden_state")}
    axes["pooler_output"] = {0: "batch"}
    export_onnx(model, [example[n] for n in BERT_INPUT_NAMES], out, dynamic_axes=axes, opset=opset)


def export_gpt2(out: Path, config: Gpt2Config = GPT2_SMALL, opset: int | None = None) -> None:
    """Export with a non-empty example past (length 3) so no axis is specialised to 0 or 1."""
    model = gpt2_torch_model(config)
    inputs, outputs = gpt2_names(config)
    batch, seq, past = 2, 4, 3
    rng = np.random.default_rng(7)
    example = [
        rng.integers(0, config.vocab_size, (batch, seq)).astype(np.int64),
        np.ones((batch, past + seq), dtype=np.int64),
        np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1)),
    ] + [
        rng.standard_normal((batch, config.heads, past, config.head_dim)).astype(np.float32)
        for _ in inputs[3:]
    ]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in inputs[3:]})
    axes.update({n: {0: "batch", 2: "total_sequence"} for n in outputs[1:]})
    export_onnx(model, example, out, dynamic_axes=axes, opset=opset)
    _share_transposed_initializers(out)


def _share_transposed_initializers(path: Path) -> None:
    """Store a tied weight once: replace an initializer that is another's transpose by a Transpose node.

    The exporter folds ``wte.weight.T`` (the tied LM head) into a second 154 MB initializer;
    runtimes fold the Transpose back at load time, so the file shrinks and the graph computes the same.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    matrices = {i.name: i for i in graph.initializer if len(i.dims) == 2 and min(i.dims) > 1}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, init in matrices.items():
        by_shape.setdefault(tuple(init.dims), []).append(name)
    replaced = []
    for name, init in matrices.items():
        if not name.startswith("onnx::"):  # keep named parameters; folded constants are "onnx::..."
            continue
        for other in by_shape.get(tuple(reversed(init.dims)), []):
            if other in replaced or not np.array_equal(
                numpy_helper.to_array(init), numpy_helper.to_array(matrices[other]).T
            ):
                continue
            graph.node.insert(0, helper.make_node("Transpose", [other], [name], perm=[1, 0], name=f"{name}_tied"))
            replaced.append(name)
            break
    if replaced:
        kept = [i for i in graph.initializer if i.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        onnx.save(model, str(path))


# --- seeded evaluation inputs ---------------------------------------------------------------

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def structured_images(count: int, *, seed: int, size: int = 224) -> np.ndarray:
    """``count`` normalised NCHW float32 images: multi-scale smooth noise plus a few flat shapes.

    They have the spatial correlation and edges of photographs (unlike white noise), so
    activations have realistic ranges.
    """
    from scipy.ndimage import zoom

    rng = np.random.default_rng([seed, 0x1A6E])
    images = np.empty((count, 3, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for n in range(count):
        img = np.zeros((size, size, 3))
        for cells in (4, 8, 16, 32, 56):
            grid = rng.standard_normal((cells, cells, 3))
            img += zoom(grid, (size / cells, size / cells, 1), order=1)[:size, :size] / math.sqrt(cells)
        img = (img - img.min()) / max(np.ptp(img), 1e-9)
        for _ in range(int(rng.integers(1, 4))):
            color = rng.uniform(0, 1, 3)
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(15, 60)
            if rng.random() < 0.5:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.4, 1.6))
            img[inside] = color
        images[n] = ((img.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return images


def bert_inputs(count: int, seq_len: int, *, seed: int, vocab_size: int = 30522) -> dict[str, np.ndarray]:
    """Seeded sentence pairs: [CLS] a [SEP] b [SEP], right-padded; lengths vary from a quarter to full."""
    rng = np.random.default_rng([seed, 0xBE27])
    ids = np.zeros((count, seq_len), dtype=np.int64)
    mask = np.zeros((count, seq_len), dtype=np.int64)
    types = np.zeros((count, seq_len), dtype=np.int64)
    low = min(1996, vocab_size // 2)  # skip BERT's special and unused tokens when the vocabulary is real-sized
    for n in range(count):
        length = int(rng.integers(max(4, seq_len // 4), seq_len + 1))
        ids[n, :length] = rng.integers(low, vocab_size, length)
        split = int(rng.integers(2, length - 1))
        ids[n, 0], ids[n, split], ids[n, length - 1] = 101 % vocab_size, 102 % vocab_size, 102 % vocab_size
        mask[n, :length] = 1
        types[n, split + 1 : length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def gpt2_prompts(count: int, length: int, *, seed: int, vocab_size: int = 50257) -> np.ndarray:
    """``count`` seeded prompts of ``length`` GPT-2 token ids each: int64 [count, length]."""
    from zhisuan.zoo.data.text_render import token_prompts

    return token_prompts(count, length, seed=seed, vocab_size=vocab_size)


# --- KV-cache decoding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """Result of :func:`generate`: new tokens, the time of each step (step 0 is the prefill)."""

    tokens: np.ndarray  # int64 [batch, new_tokens]
    step_s: tuple[float, ...]  # seconds per runtime call; step_s[0] is time to first token
    logits: np.ndarray | None = None  # float32 [batch, new_tokens, vocab] when keep_logits
    prompt_tokens: int = 0

    @property
    def ttft_s(self) -> float:
        return self.step_s[0]

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (None with a single token)."""
        return sum(self.step_s[1:]) / (len(self.step_s) - 1) if len(self.step_s) > 1 else None


@dataclass(frozen=True)
class _KvLayout:
    names: tuple[tuple[str, str, str, str], ...]  # (past key, past value, present key, present value)
    heads: int
    head_dim: int
    dtype: str
    feeds: frozenset[str] = field(default_factory=frozenset)


def _kv_layout(runtime: Any) -> _KvLayout:
    specs = {s.name: s for s in runtime.inputs()}
    layers = 0
    while f"past_key_values.{layers}.key" in specs:
        layers += 1
    if layers == 0 or "input_ids" not in specs or "attention_mask" not in specs:
        raise UserError("this model has no GPT-2 KV-cache signature (input_ids, attention_mask, past_key_values.{i}.key/value)")
    first = specs["past_key_values.0.key"]
    heads, head_dim = first.shape[1], first.shape[3]
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        raise UserError(f"past_key_values.0.key must have static heads and head size, got {first.shape}")
    names = tuple(
        (f"past_key_values.{i}.key", f"past_key_values.{i}.value", f"present.{i}.key", f"present.{i}.value")
        for i in range(layers)
    )
    return _KvLayout(names, heads, head_dim, first.dtype, frozenset(specs))


def generate(
    runtime: Any,
    prompt_ids: np.ndarray,
    max_new_tokens: int,
    *,
    forced_tokens: np.ndarray | None = None,
    keep_logits: bool = False,
) -> Generation:
    """Greedy decoding with the KV cache: one prefill call, then one call per new token.

    ``prompt_ids`` is int64 [batch, prompt] (prompts of equal length, no padding). The prefill
    feeds past tensors of length 0; each later call feeds one token and the previous presents.
    With ``forced_tokens`` [batch, max_new_tokens] the next input is the forced token instead of
    the argmax (teacher forcing), so a candidate can be scored step by step against a reference.

    >>> gen = generate(rt, np.array([[464, 2068]]), 8)  # doctest: +SKIP
    >>> gen.tokens.shape, gen.ttft_s, gen.tpot_s  # doctest: +SKIP
    """
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    if prompt.ndim == 1:
        prompt = prompt[None, :]
    batch, length = prompt.shape
    layout = _kv_layout(runtime)
    empty = np.zeros((batch, layout.heads, 0, layout.head_dim), dtype=layout.dtype)
    past = {name: empty for names in layout.names for name in names[:2]}
    wanted = ["logits"] + [name for names in layout.names for name in names[2:]]
    ids, positions = prompt, np.tile(np.arange(length, dtype=np.int64), (batch, 1))
    tokens = np.empty((batch, max_new_tokens), dtype=np.int64)
    kept: list[np.ndarray] = []
    steps: list[float] = []
    for step in range(max_new_tokens):
        total = length + step
        feeds = {"input_ids": ids, "attention_mask": np.ones((batch, total), dtype=np.int64), **past}
        if "position_ids" in layout.feeds:
            feeds["position_ids"] = positions
        start = time.perf_counter()
        out = runtime.run(feeds, wanted)
        steps.append(time.perf_counter() - start)
        last = np.asarray(out["logits"][:, -1, :], dtype=np.float32)
        tokens[:, step] = last.argmax(axis=-1)
        if keep_logits:
            kept.append(last)
        chosen = tokens[:, step] if forced_tokens is None else np.asarray(forced_tokens)[:, step]
        ids = chosen.astype(np.int64)[:, None]
        positions = np.full((batch, 1), total, dtype=np.int64)
        past = {
            name: out[present]
            for past_k, past_v, present_k, present_v in layout.names
            for name, present in ((past_k, present_k), (past_v, present_v))
        }
    logits = np.stack(kept, axis=1) if keep_logits else None
    return Generation(tokens, tuple(steps), logits, length)


# --- fidelity metrics and the reference cache -----------------------------------------------


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (last axis) of ``a`` and ``b``, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(denom, 1e-30)


def _reference(name: str, seed: int, count: int, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Reference outputs of the seeded torch model, cached as .npz keyed by version, seeds and count."""
    from zhisuan import __version__

    path = cache_dir("zoo", name, "reference") / f"v{__version__}-w{WEIGHT_SEED}-s{seed}-n{count}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    arrays = compute()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)
    return arrays


def _batch_size(spec: TensorSpec, default: int) -> int:
    first = spec.shape[0] if spec.shape else None
    return first if isinstance(first, int) and first > 0 else default


def _result(name: str, metric: str, value: float, samples: int, secondary: Mapping[str, float]) -> EvalResult:
    return EvalResult(
        model=name,
        metric=metric,
        value=round(float(value), 8),
        samples=samples,
        secondary={k: round(float(v), 8) for k, v in secondary.items()},
    )


RESNET_SAMPLES = 16
BERT_SAMPLES = 16
BERT_SEQ_LEN = 64
GPT2_SAMPLES = 4
GPT2_PROMPT_LEN = 16
GPT2_NEW_TOKENS = 8


def _evaluate_resnet50(runtime: Runtime, options: EvalOptions) -> EvalResult:
    count = options.samples or RESNET_SAMPLES
    images = structured_images(count, seed=options.seed)

    def compute() -> dict[str, np.ndarray]:
        options.progress("resnet50: computing the PyTorch FP32 reference")
        with load_runtime(resnet50_torch_model(), "torch") as reference:
            return reference.run({"image": images}, ["logits"])

    reference = _reference("resnet50", options.seed, count, compute)["logits"]
    spec = runtime.inputs()[0]
    output = runtime.outputs()[0].name
    batch = _batch_size(spec, 8)
    logits = np.concatenate(
        [
            runtime.run({spec.name: images[i : i + batch].astype(spec.dtype)}, [output])[output]
            for i in range(0, count, batch)
        ]
    )
    cos = cosine_rows(logits, reference)
    agreement = float(np.mean(logits.argmax(-1) == reference.argmax(-1)))
    return _result(
        "resnet50",
        "top1_agreement",
        agreement,
        count,
        {
            "mean_cosine": cos.mean(),
            "min_cosine": cos.min(),
            "max_abs_error": np.abs(logits - reference).max(),
            "reference_distinct_top1": len(np.unique(reference.argmax(-1))),
        },
    )


def _evaluate_bert(runtime: Runtime, options: EvalOptions) -> EvalResult:
    count = options.samples or BERT_SAMPLES
    inputs = bert_inputs(count, BERT_SEQ_LEN, seed=options.seed)

    def compute() -> dict[str, np.ndarray]:
        options.progress("bert-base: computing the PyTorch FP32 reference")
        with load_runtime(bert_torch_model(), "torch") as reference:
            return reference.run(inputs)

    reference = _reference("bert-base", options.seed, count, compute)
    names = {s.name for s in runtime.inputs()}
    missing = set(BERT_INPUT_NAMES) - names
    if missing:
        raise UserError(f"this model lacks BERT inputs {sorted(missing)}")
    batch = _batch_size(runtime.inputs()[0], 8)
    parts = [
        runtime.run({n: inputs[n][i : i + batch] for n in BERT_INPUT_NAMES}, list(BERT_OUTPUT_NAMES))
        for i in range(0, count, batch)
    ]
    hidden = np.concatenate([p["last_hidden_state"] for p in parts])
    pooled = np.concatenate([p["pooler_output"] for p in parts])
    valid = inputs["attention_mask"].astype(bool)  # padded positions carry no meaning
    cos = cosine_rows(hidden, reference["last_hidden_state"])[valid]
    pooled_cos = cosine_rows(pooled, reference["pooler_output"])
    return _result(
        "bert-base",
        "mean_cosine",
        cos.mean(),
        count,
        {
            "min_cosine": cos.min(),
            "pooler_mean_cosine": pooled_cos.mean(),
            "max_abs_error": np.abs(hidden - reference["last_hidden_state"])[valid].max(),
            "tokens": int(valid.sum()),
        },
    )


def _evaluate_gpt2(runtime: Runtime, options: EvalOptions) -> EvalResult:
    count = options.samples or GPT2_SAMPLES
    prompts = gpt2_prompts(count, GPT2_PROMPT_LEN, seed=options.seed)

    def compute() -> dict[str, np.ndarray]:
        options.progress("gpt2-small: greedy decoding with the PyTorch FP32 reference")
        with load_runtime(gpt2_torch_model(), "torch") as reference:
            runs = [generate(reference, p[None], GPT2_NEW_TOKENS, keep_logits=True) for p in prompts]
        return {
            "tokens": np.concatenate([r.tokens for r in runs]),
            "logits": np.concatenate([r.logits for r in runs if r.logits is not None]),
        }

    reference = _reference("gpt2-small", options.seed, count, compute)
    runs = [
        generate(runtime, p[None], GPT2_NEW_TOKENS, forced_tokens=reference["tokens"][i : i + 1], keep_logits=True)
        for i, p in enumerate(prompts)
    ]
    logits = np.concatenate([r.logits for r in runs if r.logits is not None])
    tokens = np.concatenate([r.tokens for r in runs])
    cos = cosine_rows(logits, reference["logits"])
    return _result(
        "gpt2-small",
        "next_token_agreement",
        np.mean(tokens == reference["tokens"]),
        count,
        {
            "mean_cosine": cos.mean(),
            "min_cosine": cos.min(),
            "max_abs_error": np.abs(logits - reference["logits"]).max(),
            "decode_steps": tokens.size,
        },
    )


# --- entries --------------------------------------------------------------------------------


def _builder(export: Callable[..., None]) -> Callable[[Path, BuildOptions, Progress], None]:
    def build(out: Path, options: BuildOptions, progress: Progress) -> None:
        progress(f"exporting with {EXPORTER}, opset {options.opset or DEFAULT_OPSET}")
        export(out, opset=options.opset)

    return build


# --- Realistic inputs and scored samples (the zoo hooks) ------------------------------------
# Inputs are made like the evaluation set; ``seed`` picks them (calibration uses another seed than
# the evaluators' 0, so it never sees the evaluation inputs).

_HOOK_BATCH = 4


def _resnet50_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    images = structured_images(batches * _HOOK_BATCH, seed=seed)
    return [{"image": images[i : i + _HOOK_BATCH]} for i in range(0, len(images), _HOOK_BATCH)]


def _bert_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    count = batches * _HOOK_BATCH
    data = bert_inputs(count, BERT_SEQ_LEN, seed=seed)
    return [{k: v[i : i + _HOOK_BATCH] for k, v in data.items()} for i in range(0, count, _HOOK_BATCH)]


def _gpt2_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    """Prefill and cached decoding steps of the float model: the past inputs are its own presents."""
    from zhisuan.zoo.recording import recorded_feeds

    steps = 4
    prompts = gpt2_prompts(max(1, -(-batches // steps)), GPT2_PROMPT_LEN, seed=seed)
    return recorded_feeds("gpt2-small", lambda rt: [generate(rt, p[None], steps) for p in prompts])[:batches]


def _rows(outputs: Sequence[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([np.asarray(o[name], dtype=np.float32).reshape(1, -1) for o in outputs])


def _resnet50_samples(specs: Sequence[Any]) -> ScoredSamples:
    """The evaluation images one per sample, scored by argmax agreement with the PyTorch FP32 reference."""
    images = structured_images(RESNET_SAMPLES, seed=0)
    cache: dict[str, np.ndarray] = {}

    def score(outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
        if "logits" not in cache:  # the PyTorch FP32 reference of the same seeded weights
            with load_runtime(resnet50_torch_model(), "torch") as reference:
                cache["logits"] = reference.run({"image": images}, ["logits"])["logits"]
        logits = _rows(outputs, "logits")
        cos = cosine_rows(logits, cache["logits"])
        return (float(np.mean(logits.argmax(-1) == cache["logits"].argmax(-1))),
                {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())})

    return ScoredSamples(tuple({"image": images[i : i + 1]} for i in range(len(images))),
                         f"zoo:resnet50 evaluation inputs ({len(images)} seeded structured images)",
                         "top1_agreement", True, score)


def _bert_samples(specs: Sequence[Any]) -> ScoredSamples:
    """The evaluation sentence pairs one per sample, scored by cosine with the PyTorch FP32 reference."""
    inputs = bert_inputs(BERT_SAMPLES, BERT_SEQ_LEN, seed=0)
    cache: dict[str, np.ndarray] = {}

    def score(outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
        if "hidden" not in cache:
            with load_runtime(bert_torch_model(), "torch") as reference:
                cache["hidden"] = reference.run(inputs, ["last_hidden_state"])["last_hidden_state"]
        hidden = np.concatenate([np.asarray(o["last_hidden_state"]) for o in outputs])
        valid = inputs["attention_mask"].astype(bool)
        cos = cosine_rows(hidden, cache["hidden"])[valid]
        return float(cos.mean()), {"min_cosine": float(cos.min())}

    return ScoredSamples(tuple({k: v[i : i + 1] for k, v in inputs.items()} for i in range(BERT_SAMPLES)),
                         f"zoo:bert-base evaluation inputs ({BERT_SAMPLES} seeded sentence pairs, "
                         f"{BERT_SEQ_LEN} tokens)", "mean_cosine", True, score)


#: EV-5 tasks of the large reference models: ONNX Runtime in the standard and full suites,
#: OpenVINO in the full suite (each several minutes on a small CPU).
_LARGE_SUITE_RUNS = (
    SuiteRun("onnxruntime", ("standard", "full"), {"standard": 180, "full": 600}),
    SuiteRun("openvino", ("full",), {"full": 600}),
)

_FIDELITY = "random seeded weights: the metric is fidelity to the PyTorch FP32 reference of the same weights"

ENTRIES = [
    ZooEntry(
        name="resnet50",
        task="image classification (reference architecture)",
        summary="ResNet-50 v1.5 (25.6 M parameters), seeded random weights with calibrated BatchNorm",
        kind="random-init",
        license=LICENSE,
        weights=None,
        preprocess="image: float32 NCHW [batch, 3, 224, 224], RGB normalised with ImageNet mean/std",
        postprocess="logits [batch, 1000]; argmax is the class",
        metric="top1_agreement",
        metric_description=(
            f"{_FIDELITY}: fraction of images whose argmax equals the reference's; secondary: cosine of logits"
        ),
        eval_set="seeded structured images (multi-scale smooth noise with flat shapes), ImageNet-normalised",
        default_eval_samples=RESNET_SAMPLES,
        build=_builder(export_resnet50),
        evaluate=_evaluate_resnet50,
        inputs=_resnet50_inputs,
        samples=_resnet50_samples,
        suite_runs=_LARGE_SUITE_RUNS,
        torch_model=resnet50_torch_model,
        architecture_source=ARCHITECTURE_SOURCE,
        metadata={"parameters": 25_557_032, "weight_seed": WEIGHT_SEED, "exporter": EXPORTER, "opset": DEFAULT_OPSET},
    ),
    ZooEntry(
        name="bert-base",
        task="text encoding (reference architecture)",
        summary="BERT-base encoder (12 layers, 768 hidden, 12 heads; 109.5 M parameters), seeded random weights",
        kind="random-init",
        license=LICENSE,
        weights=None,
        preprocess=(
            "input_ids, attention_mask, token_type_ids: int64 [batch, sequence] (WordPiece ids of the "
            "bert-base-uncased vocabulary size, 1 = real token in the mask, segment 0/1); sequence <= 512"
        ),
        postprocess="last_hidden_state [batch, sequence, 768]; pooler_output [batch, 768] (tanh of [CLS])",
        metric="mean_cosine",
        metric_description=(
            f"{_FIDELITY}: mean cosine similarity of last_hidden_state per real (unpadded) token; "
            "secondary: min cosine, pooler cosine"
        ),
        eval_set=f"seeded random sentence pairs [CLS] a [SEP] b [SEP], length {BERT_SEQ_LEN} with padding",
        default_eval_samples=BERT_SAMPLES,
        build=_builder(export_bert),
        evaluate=_evaluate_bert,
        inputs=_bert_inputs,
        samples=_bert_samples,
        suite_runs=_LARGE_SUITE_RUNS,
        torch_model=bert_torch_model,
        architecture_source=ARCHITECTURE_SOURCE,
        metadata={
            "parameters": 109_482_240,
            "weight_seed": WEIGHT_SEED,
            "exporter": EXPORTER,
            "opset": DEFAULT_OPSET,
            "num_layers": BERT_BASE.layers,
            "num_heads": BERT_BASE.heads,
            "hidden_size": BERT_BASE.hidden,
            "fusion_hint": "onnxruntime.transformers optimizer, model_type='bert', num_heads=12, hidden_size=768",
        },
    ),
    ZooEntry(
        name="gpt2-small",
        task="text generation (reference architecture)",
        summary="GPT-2 small decoder (12 layers, 768 hidden; 124.4 M parameters) with KV cache, seeded random weights",
        kind="random-init",
        license=LICENSE,
        weights=None,
        preprocess=(
            "input_ids [batch, sequence], attention_mask [batch, past + sequence], position_ids [batch, sequence] "
            "(int64); past_key_values.{i}.key/value float32 [batch, 12, past, 64] for i in 0..11 "
            "(past = 0 at the prefill)"
        ),
        postprocess="logits [batch, sequence, 50257]; present.{i}.key/value [batch, 12, past + sequence, 64] feed the next step",
        metric="next_token_agreement",
        metric_description=(
            f"{_FIDELITY}: fraction of greedy decoding steps (prefill + cached steps, teacher-forced on the "
            "reference's tokens) whose argmax equals the reference's; secondary: cosine of the logits"
        ),
        eval_set=(
            f"seeded random prompts of {GPT2_PROMPT_LEN} tokens, {GPT2_NEW_TOKENS} new tokens each, batch 1"
        ),
        default_eval_samples=GPT2_SAMPLES,
        build=_builder(export_gpt2),
        evaluate=_evaluate_gpt2,
        inputs=_gpt2_inputs,
        torch_model=gpt2_torch_model,
        architecture_source=ARCHITECTURE_SOURCE,
        metadata={
            "parameters": 124_439_808,
            "weight_seed": WEIGHT_SEED,
            "exporter": EXPORTER,
            "opset": DEFAULT_OPSET,
            "num_layers": GPT2_SMALL.layers,
            "num_heads": GPT2_SMALL.heads,
            "head_dim": GPT2_SMALL.head_dim,
            "hidden_size": GPT2_SMALL.hidden,
            "vocab_size": GPT2_SMALL.vocab_size,
            "max_positions": GPT2_SMALL.positions,
            "kv_cache": {
                "past_inputs": "past_key_values.{i}.key, past_key_values.{i}.value",
                "present_outputs": "present.{i}.key, present.{i}.value",
                "layout": "[batch, num_heads, past_sequence, head_dim]",
                "dtype": "float32",
                "prefill": "feed past tensors of length 0 (zero-sized) with the whole prompt",
                "decode": "feed one token, attention_mask of ones over past + 1, position_ids = past, presents as past",
                "attention_mask": "covers past + current tokens; 0 marks (left) padding",
                "driver": "zhisuan.zoo.models.reference.generate",
            },
        },
    ),
]

__all__ = [
    "BERT_BASE",
    "GPT2_SMALL",
    "BertConfig",
    "Generation",
    "Gpt2Config",
    "build_bert",
    "build_gpt2",
    "build_resnet50",
    "cosine_rows",
    "export_bert",
    "export_gpt2",
    "export_resnet50",
    "generate",
    "parameter_count",
]

