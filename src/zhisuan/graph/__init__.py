"""ONNX graph utilities shared by convert, optimize, quantize, compare and profile."""

from zhisuan.graph.namemap import NAME_MAP_KEY, NameMap, read_name_map, write_name_map
from zhisuan.graph.onnx_io import load_model, save_model

__all__ = ["NAME_MAP_KEY", "NameMap", "load_model", "read_name_map", "save_model", "write_name_map"]
