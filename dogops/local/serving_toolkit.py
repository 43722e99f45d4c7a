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

Batches (`invoke_batch`): sagemaker-inference 1.10.1 runs a TorchServe batch through
input_fn / predict_fn / output_fn one request at a time (its `transform` loops over the batch,
with the first request's headers for all), so it cannot give a forward pass more than one image.
When `inference.py` offers `batch_predict_fn(inputs, model)` and declares its `predict_fn` to be
that function's batch of one (`predict_fn.batch_step = batch_predict_fn`), the worker keeps the
toolkit's per-request rules (content type and Accept resolution, UTF-8 decoding, error statuses) but
decodes the requests in parallel, each with its own context, and runs one `batch_predict_fn` for
the batch. A request that fails fails alone; without `batch_predict_fn` (or with a
`transform_fn`) each request goes through the toolkit's own path, as a real endpoint does.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
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

        self.model_dir = model_dir
        self.context = ServingContext(model_dir)
        self.service = HandlerService()
        self.service.initialize(self.context)
        transformer = self.service._service  # the toolkit's Transformer (pinned version)
        module = importlib.import_module(transformer._environment.module_name)
        uses_steps = transformer._transform_fn == transformer._default_transform_fn
        batch_step = getattr(module, "batch_predict_fn", None)
        # Only while predict_fn is declared to be batch_step's batch of one (inference.py sets
        # `predict_fn.batch_step`): a model that replaces predict_fn keeps its own predict_fn.
        declared = getattr(getattr(module, "predict_fn", None), "batch_step", None) is batch_step
        self.batch_predict_fn = batch_step if uses_steps and declared else None
        self._decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                            thread_name_prefix="decode")

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, bytes, str]:
        """(status, body, content type) exactly as the toolkit decided them."""
        self.context.begin(content_type, accept)
        answer = self.service.handle([{"body": bytearray(body)}], self.context)
        return _answer(self.context, answer[0] if answer else b"", accept)

    def invoke_batch(self, requests: list[tuple[bytes, str, str]]) -> list[tuple[int, bytes, str]]:
        """One answer per (body, content type, accept), in order; one forward pass for those that
        decode. Falls back to one `invoke` per request when the model code has no batch step."""
        if self.batch_predict_fn is None or len(requests) == 1:
            return [self.invoke(*request) for request in requests]
        steps = _Steps(self.service._service, self.model_dir)
        decoded = list(self._decoders.map(lambda r: steps.decode(*r), requests))
        # What input_fn returned goes on (its own error objects included); what failed in the
        # toolkit's own steps has its answer already.
        live = [d for d in decoded if not isinstance(d.data, _Failed)]
        inputs = [d.data for d in live]
        try:
            outputs = list(self.batch_predict_fn(inputs, steps.model)) if inputs else []
            if len(outputs) != len(inputs):
                raise ValueError(f"batch_predict_fn gave {len(outputs)} answers for "
                                 f"{len(inputs)} inputs")
        except Exception:  # noqa: BLE001 - find the culprit: each request alone
            outputs = [steps.predict_alone(self.batch_predict_fn, x) for x in inputs]
        predictions: dict[int, Any] = {id(d): p for d, p in zip(live, outputs, strict=True)}
        return [steps.encode(d, predictions.get(id(d), d.data)) for d in decoded]


class _Failed:
    """A request that failed in one step: its status and body are already decided."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body


class _Decoded:
    def __init__(self, context: ServingContext, data: Any, accept: str) -> None:
        self.context, self.data, self.accept = context, data, accept


class _Steps:
    """The toolkit's per-request rules (`Transformer.transform`), split into decode / encode so
    that the prediction in between can serve a whole batch. Each request has its own context."""

    def __init__(self, transformer: Any, model_dir: str) -> None:
        from sagemaker_inference import content_types, utils

        self.t = transformer
        self.model = transformer._model
        self.model_dir = model_dir
        self._types, self._utils = content_types, utils

    def _call(self, fn: Any, context: ServingContext, *args: Any) -> Any:
        """The toolkit's rule: a function with one more parameter gets the context."""
        extra = len(inspect.signature(fn).parameters) - len(args)
        return fn(*args, context) if extra == 1 else fn(*args)

    def _fail(self, context: ServingContext, exc: Exception) -> _Failed:
        from sagemaker_inference.errors import (
            BaseInferenceToolkitError,
            GenericInferenceToolkitError,
        )

        error = exc if isinstance(exc, BaseInferenceToolkitError) else (
            GenericInferenceToolkitError(500, str(exc)))
        body = self.t.handle_error(context, error, traceback.format_exc())[0]
        return _Failed(context.status[0], body.encode() if isinstance(body, str) else body)

    def decode(self, body: bytes, content_type: str, accept: str) -> _Decoded:
        context = ServingContext(self.model_dir)
        context.begin(content_type, accept)
        headers = context.request_processor[0].get_request_properties()
        media = self._utils.retrieve_content_type_header(headers)
        if not accept or accept == self._types.ANY:
            accept = self.t._environment.default_accept
        try:
            data: Any = bytearray(body)
            if media in self._types.UTF8_TYPES:
                data = data.decode("utf-8")
            return _Decoded(context, self._call(self.t._input_fn, context, data, media), accept)
        except Exception as exc:  # noqa: BLE001 - this request fails, the batch goes on
            return _Decoded(context, self._fail(context, exc), accept)

    def predict_alone(self, batch_predict_fn: Any, data: Any) -> Any:
        if isinstance(data, _Failed):
            return data
        try:
            return batch_predict_fn([data], self.model)[0]
        except Exception as exc:  # noqa: BLE001 - this request fails alone
            return self._fail(ServingContext(self.model_dir), exc)

    def encode(self, decoded: _Decoded, prediction: Any) -> tuple[int, bytes, str]:
        context = decoded.context
        failed = prediction if isinstance(prediction, _Failed) else decoded.data
        if isinstance(failed, _Failed):
            return failed.status, failed.body, "text/plain"
        try:
            result = self._call(self.t._output_fn, context, prediction, decoded.accept)
            response, out_type = result if isinstance(result, tuple) else (result,
                                                                          decoded.accept)
            context.set_response_content_type(0, out_type)
        except Exception as exc:  # noqa: BLE001
            failed = self._fail(context, exc)
            return failed.status, failed.body, "text/plain"
        return _answer(context, response, decoded.accept)


def _answer(context: ServingContext, payload: str | bytes, accept: str) -> tuple[int, bytes, str]:
    """(status, body, content type) as the toolkit left them in `context`: an error without a
    content type of its own is text/plain, an answer without one is what was asked for."""
    status = context.status[0]
    out_type = context.content_type or ("text/plain" if status >= 400 else accept)
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    return status, body, str(out_type)


def public_error(status: int, body: bytes) -> bytes:
    """What the front may show of a 5xx: the toolkit puts the model's traceback in the body,
    which stays in the endpoint log here, as details of internal errors should."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return f"Internal error in the model code ({status} {phrase}); see the endpoint log.".encode()
