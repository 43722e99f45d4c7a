"""The worker side of the local endpoint: `inference.py` served by SageMaker's own serving toolkits.

In the SageMaker PyTorch inference container, TorchServe (Java) hands each request to
`sagemaker_pytorch_serving_container.handler_service.HandlerService`, which wraps
`sagemaker_inference.transformer.Transformer`: it imports the module named by `SAGEMAKER_PROGRAM`
from `<model_dir>/code`, calls `model_fn` once, and per request picks `input_fn` / `predict_fn` /
`output_fn` (or the toolkit's defaults), decides content types and Accept, and maps errors: a
`BaseInferenceToolkitError` keeps its status, anything else becomes 500 with the traceback.

The local worker runs that same Python path; only TorchServe's part is ours: `ServingContext`
is the context object TorchServe passes (one per worker, reused by every request, as TorchServe
does), carrying the model dir, the request headers and the response status / content type.
"""

from __future__ import annotations

import os
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

# What the aws backend's CreateModel sets too (dogops.aws.endpoint.container_environment).
ENTRY_POINT = "inference.py"


class _RequestProcessor:
    """TorchServe's per-request header holder (`request_processor[i]`)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers


class ServingContext:
    """The subset of TorchServe's `ts.context.Context` the toolkits use."""

    def __init__(self, model_dir: str) -> None:
        self.system_properties: dict[str, Any] = {"model_dir": model_dir, "gpu_id": None}
        self.request_processor: list[_RequestProcessor] = []
        self.status: tuple[int, str] = (200, "OK")
        self.content_type: str | None = None

    def begin(self, content_type: str, accept: str) -> None:
        """Reset the response and set this request's headers (TorchServe does so per batch)."""
        self.request_processor = [
            _RequestProcessor({"Content-Type": content_type, "Accept": accept})
        ]
        self.status = (200, "OK")
        self.content_type = None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (int(code), phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value

    def get_response_content_type(self, idx: int = 0) -> str | None:
        return self.content_type


class ToolkitWorker:
    """One loaded model behind the toolkit's HandlerService; `invoke` answers one request."""

    def __init__(self, model_dir: str, code_dir: str) -> None:
        code = Path(code_dir)
        if not (code / ENTRY_POINT).is_file():
            raise FileNotFoundError(
                f"{code / ENTRY_POINT} does not exist: the code dir must hold {ENTRY_POINT}."
            )
        os.environ.setdefault("SAGEMAKER_PROGRAM", ENTRY_POINT)
        os.environ.setdefault("SM_MODEL_DIR", model_dir)
        # The model server starts its Python workers with the code dir on PYTHONPATH.
        if str(code) not in sys.path:
            sys.path.insert(0, str(code))
        # A fresh import of this code dir's module (a test process may serve several).
        sys.modules.pop(Path(os.environ["SAGEMAKER_PROGRAM"]).stem, None)
        from sagemaker_pytorch_serving_container.handler_service import HandlerService

        self.context = ServingContext(model_dir)
        self.service = HandlerService()
        self.service.initialize(self.context)

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, bytes, str]:
        """(status, body, content type) exactly as the toolkit decided them."""
        self.context.begin(content_type, accept)
        answer = self.service.handle([{"body": bytearray(body)}], self.context)
        payload = answer[0] if answer else b""
        if isinstance(payload, str):
            payload = payload.encode()
        status, _ = self.context.status
        out_type = self.context.content_type or ("text/plain" if status >= 400 else accept)
        return status, bytes(payload), str(out_type)


def public_error(status: int, body: bytes) -> bytes:
    """What the front may show of a 5xx: the toolkit puts the model's traceback in the body,
    which stays in the endpoint log here, as details of internal errors should."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return f"Internal error in the model code ({status} {phrase}); see the endpoint log.".encode()
