"""Convert (DEP-1): PyTorch factories, ONNX files and zoo models into ONNX, ORT, OpenVINO IR, TensorRT.

>>> from zhisuan.convert import convert
>>> convert("model.onnx", "model.xml").max_abs_error  # doctest: +SKIP
"""

from zhisuan.convert.api import TARGETS, ConvertResult, Target, convert

__all__ = ["TARGETS", "ConvertResult", "Target", "convert"]
