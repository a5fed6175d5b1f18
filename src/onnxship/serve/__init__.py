"""Serving: a KServe v2 / Open Inference Protocol server with golden-checked hot reload and dynamic batching.

Runs without torch: only onnxruntime, numpy, orjson and uvicorn (``pip install 'onnxship[serve]'``). Importing this
package loads no onnxruntime; models are opened through :func:`onnxship.runtime.create_session`.
"""

from onnxship._util import verb_module
from onnxship.serve._api import ServeResult, serve
from onnxship.serve._app import ServeApp, create_app
from onnxship.serve._config import ServeConfig
from onnxship.serve._manager import ModelManager, find_latest
from onnxship.serve._model import ServedModel
from onnxship.serve._signature import RequestError, Signature

__all__ = [
    "ModelManager",
    "RequestError",
    "ServeApp",
    "ServeConfig",
    "ServeResult",
    "ServedModel",
    "Signature",
    "create_app",
    "find_latest",
    "serve",
]

verb_module(__name__, "serve")
