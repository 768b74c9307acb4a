"""Accuracy alignment (SPEC DEP-4): compare a reference and a candidate model, output by output
and layer by layer, and find the first operator where they diverge.

>>> from zhisuan.compare import CompareConfig, compare_models
>>> result = compare_models("model.onnx", "model-int8.onnx", CompareConfig(layerwise=True))  # doctest: +SKIP
>>> result.to_dict()["first_divergence"]["node"]  # doctest: +SKIP
'conv2'
"""

from zhisuan.compare.core import compare_models
from zhisuan.compare.metrics import AgreementAccumulator, TensorAgreement, Tolerance, agreement
from zhisuan.compare.results import (
    CompareConfig,
    CompareResult,
    Divergence,
    LayerResult,
    Measurement,
    ModelSide,
    OutputResult,
)

__all__ = [
    "AgreementAccumulator",
    "CompareConfig",
    "CompareResult",
    "Divergence",
    "LayerResult",
    "Measurement",
    "ModelSide",
    "OutputResult",
    "TensorAgreement",
    "Tolerance",
    "agreement",
    "compare_models",
]
