"""Model packages and inference serving (SPEC SRV-1..SRV-7).

Packages and the repository (:mod:`zhisuan.serve.package`, :mod:`zhisuan.serve.repository`),
declarative processing (:mod:`zhisuan.serve.processing`, one op per module in
:mod:`zhisuan.serve.ops`), replica pools (:mod:`zhisuan.serve.workers`) and the Ray Serve engine
(:mod:`zhisuan.serve.ray_engine`), next to the Open Inference Protocol v2 server
(:mod:`zhisuan.serve.server`: its state in :mod:`zhisuan.serve.hub`, its HTTP handlers in
:mod:`zhisuan.serve.routes`; :mod:`zhisuan.serve.testing` serves without a model runtime). Importing this package stays light: names are loaded
on first use, and nothing here imports onnxruntime, fastapi or ray.

>>> from zhisuan import serve
>>> serve.BatchingConfig().max_batch_size
8
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatchingConfig",
    "MockEngine",
    "Package",
    "PackageManifest",
    "RayExecutor",
    "ReplicaPool",
    "Repository",
    "TensorSig",
    "load_package",
    "pack",
]

_WHERE = {
    "BatchingConfig": "package",
    "Package": "package",
    "PackageManifest": "package",
    "TensorSig": "package",
    "load_package": "package",
    "pack": "package",
    "Repository": "repository",
    "MockEngine": "testing",
    "ReplicaPool": "workers",
    "RayExecutor": "ray_engine",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
