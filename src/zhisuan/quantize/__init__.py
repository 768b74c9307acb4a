"""Post-training quantization: INT8 static (QDQ, integer islands chosen from the graph) and dynamic,
FP16; ``auto`` picks the fastest that meets a metric budget, the float model when INT8 does not
pay; per-layer sensitivity; and an accuracy-budgeted search for the fewest layers kept in float
(DEP-3).

>>> from zhisuan.quantize import QuantizeConfig
>>> QuantizeConfig(mode="int8", method="percentile").method.value
'percentile'
"""

from zhisuan.quantize.api import QuantizeResult, SensitivityResult, quantize_model, sensitivity_analysis
from zhisuan.quantize.calibration import CalibrationInfo
from zhisuan.quantize.config import Method, Metric, MetricKind, Mode, QuantizeConfig
from zhisuan.quantize.engine import Preprocessing
from zhisuan.quantize.metrics import LatencyComparison, Timing
from zhisuan.quantize.policy import Contender, PolicyDecision, Selection
from zhisuan.quantize.search import Candidate, FloatLayer, LayerSensitivity, SearchResult

__all__ = [
    "CalibrationInfo",
    "Candidate",
    "Contender",
    "FloatLayer",
    "LatencyComparison",
    "LayerSensitivity",
    "Method",
    "Metric",
    "MetricKind",
    "Mode",
    "PolicyDecision",
    "Preprocessing",
    "QuantizeConfig",
    "QuantizeResult",
    "SearchResult",
    "Selection",
    "SensitivityResult",
    "Timing",
    "quantize_model",
    "sensitivity_analysis",
]
