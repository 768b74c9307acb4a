"""zhisuan (智算): deploy AI models onto accelerators and evaluate those accelerators.

The package root stays light: importing it never imports torch, onnxruntime or openvino.

>>> import zhisuan
>>> isinstance(zhisuan.__version__, str)
True
"""

from zhisuan.errors import BackendUnavailableError, InternalError, UserError, ZhisuanError

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "InternalError",
    "UserError",
    "ZhisuanError",
    "__version__",
]
