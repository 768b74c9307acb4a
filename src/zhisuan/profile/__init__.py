"""Performance analysis (DEP-5): per-operator time, analytic FLOPs and bytes, the device roofline.

>>> from zhisuan.profile import profile_model
>>> profile_model("model.onnx", runtime="openvino").per_op_type[0]  # doctest: +SKIP
"""

from zhisuan.profile.api import NodeProfile, OpTypeProfile, ProfileResult, Roofline, profile_model
from zhisuan.profile.flops import NodeCost, node_costs
from zhisuan.profile.roofline import DevicePeaks, device_peaks

__all__ = [
    "DevicePeaks",
    "NodeCost",
    "NodeProfile",
    "OpTypeProfile",
    "ProfileResult",
    "Roofline",
    "device_peaks",
    "node_costs",
    "profile_model",
]
