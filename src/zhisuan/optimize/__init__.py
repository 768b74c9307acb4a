"""Graph optimization: a registry of passes (one per file), a fixpoint driver, name maps, verification.

>>> from zhisuan.optimize import optimize_model, available_passes
>>> [p.name for p in available_passes()][:2]  # doctest: +SKIP
['constants-to-initializers', 'dedup-initializers']
"""

from zhisuan.optimize.driver import (
    OptimizeResult,
    OutputCheck,
    PassReport,
    Verification,
    optimize_model,
    verify_outputs,
)
from zhisuan.optimize.registry import (
    DEFAULT_PIPELINE,
    PassContext,
    PassInfo,
    PassOutcome,
    available_passes,
    default_pipeline,
    register_pass,
    unregister_pass,
)

__all__ = [
    "DEFAULT_PIPELINE",
    "OptimizeResult",
    "OutputCheck",
    "PassContext",
    "PassInfo",
    "PassOutcome",
    "PassReport",
    "Verification",
    "available_passes",
    "default_pipeline",
    "optimize_model",
    "register_pass",
    "unregister_pass",
    "verify_outputs",
]
