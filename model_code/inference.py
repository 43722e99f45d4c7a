"""Serving code for the SageMaker PyTorch serving contract (`model_fn`, `input_fn`, `predict_fn`,
`output_fn`), also used by the local backend's endpoint process.

Requests: `image/jpeg`, `image/png`, `application/x-image` bytes, or `application/json` with
`{"url": ...}` (the original Lambda's event), `{"image": "<base64>"}` or `{"b64": ...}`, plus
optional `"top_k"` and `"logits": true`. Responses: `application/json`
`{"label", "probability", "predictions": [{"label", "probability"}, ...]}`; the original's raw
logits `[[...]]` with Accept `application/x-logits+json` or `"logits": true`.

Every bad request raises `RequestError`, the serving toolkit's `BaseInferenceToolkitError`
(imported when `sagemaker-inference` is installed, a stand-in otherwise): 400 bad input, 413 too
large, 415 unsupported content type, 406 unsupported accept type. Under the toolkit (which passes
its context to `input_fn` / `output_fn`), the error is answered with its status and a one-line
`text/plain` message instead of being raised: a raised one would carry a traceback in the body.

URL fetching is bounded, because the endpoint would otherwise fetch anything for anyone
(server-side request forgery): only allowed schemes (`DOGOPS_ALLOWED_URL_SCHEMES`, default
`https,s3`) and hosts (`DOGOPS_ALLOWED_URL_HOSTS`, default any public host); the host is resolved
once and every address that is not globally routable is refused unless the host is listed
explicitly; the connection goes to the checked address (no DNS re-binding); redirects are not
followed; `s3://` only from buckets in `DOGOPS_ALLOWED_S3_BUCKETS` (the backends set the project's
bucket); one deadline for the whole fetch, DNS included (`DOGOPS_URL_TIMEOUT_S`, default 5); a
size limit (`DOGOPS_MAX_IMAGE_BYTES`, default 10 MB, which also bounds request bodies).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from PIL import Image

try:
    from model_code import net
except ImportError:  # SageMaker serving: model_dir/code/ is on sys.path
    import net  # type: ignore[no-redef]

JSON_TYPE = "application/json"
LOGITS_TYPE = "application/x-logits+json"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "application/x-image"})
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Decoded pixels, checked from the image header before any pixel is decoded: a 400 KB PNG of
# 12,000 x 12,000 passes the byte limits and costs 1.1 GB to decode. 24 MP is a 6000 x 4000
# camera original (and above a 4K frame, 8.3 MP); Pillow holds 4 bytes a pixel, so the most one
# request decodes is ~96 MB (~184 MB peak for a PNG that needs converting), and larger real
# photos rarely fit the endpoint's 6 MB body anyway. The model sees 224 px or less.
DEFAULT_MAX_IMAGE_PIXELS = 24_000_000
DEFAULT_TOP_K = 5


try:  # the SageMaker serving toolkit maps this type to its status; anything else becomes 500
    from sagemaker_inference import content_types as _toolkit_types
    from sagemaker_inference.errors import BaseInferenceToolkitError

    # sagemaker-inference 1.10.1's Transformer.transform decodes a body whose Content-Type is in
    # content_types.UTF8_TYPES ("application/json", "text/csv") as UTF-8 before input_fn (and
    # transform_fn), answering a non-UTF-8 body 500. It reads the list per request and imports
    # this module before the first one: emptied, every body reaches input_fn as bytes, which
    # answers a bad one 400. Only the default input_fn (replaced here) reads it too.
    del _toolkit_types.UTF8_TYPES[:]
except ImportError:  # stand-alone (evaluation, tests without the toolkit): the same shape

    class BaseInferenceToolkitError(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            self.status_code, self.message, self.phrase = status_code, message, phrase
            super().__init__(status_code, message, phrase)


class RequestError(BaseInferenceToolkitError, ValueError):
    """A client error; `status_code` is the HTTP status the serving process should answer."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, message, HTTPStatus(status_code).phrase)
        self.position = 0  # this request's index in a TorchServe batch

    def __str__(self) -> str:
        return str(self.message)


# --- settings, read per request so tests and operators can change them without a restart -----


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def max_image_bytes() -> int:
    return _env_int("DOGOPS_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def max_image_pixels() -> int:
    return _env_int("DOGOPS_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def default_top_k() -> int:
    return _env_int("DOGOPS_TOP_K", DEFAULT_TOP_K)


# --- model -------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """What `model_fn` returns: the network plus what inference needs to know about it."""

    module: net.Classifier
    class_names: list[str]
    image_size: int
    architecture: str
    device: torch.device
    transform: Any
    metadata: dict[str, Any]


def model_fn(model_dir: str | Path) -> LoadedModel:
    """Load `model.pth` with the architecture, size and classes from `metadata.json`."""
    model_dir = Path(model_dir)
    meta_path = model_dir / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing: the model folder must come from model_code/train.py, "
            f"which writes model.pth and metadata.json side by side."
        )
    metadata = json.loads(meta_path.read_text())
    class_names = list(metadata["class_names"])
    image_size = int(metadata["image_size"])
    architecture = str(metadata["architecture"])
    module = net.build_model(architecture, len(class_names), image_size=image_size,
                             pretrained=False)
    state = torch.load(model_dir / "model.pth", map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    return LoadedModel(module, class_names, image_size, architecture, device,
                       net.eval_transform(image_size), metadata)


# --- input -------------------------------------------------------------------------------------


@dataclass
class ImageRequest:
    """A decoded request: the RGB image and how the caller wants the answer."""

    image: Image.Image
    top_k: int
    logits: bool = False
    position: int = 0  # this request's index in a TorchServe batch


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def check_size(body: bytes) -> None:
    limit = max_image_bytes()
    if len(body) > limit:
        raise RequestError(
            f"request body is {len(body)} bytes, over the {limit}-byte limit "
            f"(DOGOPS_MAX_IMAGE_BYTES): send a smaller image.", 413)


def _too_many_pixels(width: int, height: int) -> RequestError:
    limit = max_image_pixels()
    return RequestError(
        f"image is {width} x {height} = {width * height:,} pixels, over the {limit:,}-pixel "
        f"limit (DOGOPS_MAX_IMAGE_PIXELS): resize it to at most {limit / 1e6:g} megapixels.", 413)


def load_image_bytes(payload: bytes) -> Image.Image:
    """Decode image bytes fully as RGB (PNG with alpha, greyscale, palette all work), once the
    header's size is within the pixel limit (`Image.open` reads the header only)."""
    if not payload:
        raise RequestError("empty image: the request carried no image bytes.")
    check_size(payload)
    try:
        image = Image.open(io.BytesIO(payload))
        width, height = image.size
        if width * height > max_image_pixels():
            raise _too_many_pixels(width, height)
        image.load()
        # An RGB image (most JPEGs) is used as decoded: convert() would copy it.
        return image if image.mode == "RGB" else image.convert("RGB")
    except RequestError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own bound, over 2x its warning size
        raise RequestError(f"image has too many pixels: {exc} (DOGOPS_MAX_IMAGE_PIXELS is "
                           f"{max_image_pixels():,}): send a smaller image.", 413) from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken data
        raise RequestError(
            f"cannot decode the image ({type(exc).__name__}): send a valid JPEG or PNG."
        ) from exc


def decode_base64(text: Any) -> bytes:
    """Base64 (optionally a `data:image/...;base64,` URI) to bytes."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError('"image" must be a non-empty base64 string.')
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) * 3 // 4 > max_image_bytes():
        raise RequestError("base64 image is over the size limit (DOGOPS_MAX_IMAGE_BYTES).", 413)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"invalid base64 image data: {exc}") from exc


def _fetch_url(url: Any) -> bytes:
    """URL fetching lives in url_fetch.py, imported on the first URL request only."""
    try:
        from model_code import url_fetch
    except ImportError:  # SageMaker serving: model_dir/code/ is on sys.path
        import url_fetch  # type: ignore[no-redef]
    try:
        return url_fetch.fetch_url(url, max_image_bytes())
    except url_fetch.FetchError as exc:
        raise RequestError(str(exc), exc.status_code) from None


def load_json(body: bytes) -> Any:
    """A JSON body, or a RequestError (400) naming what is wrong with it. Besides syntax: a body
    that is not UTF-8, nesting deeper than the parser's recursion limit (RecursionError) and an
    integer of more than `sys.get_int_max_str_digits()` digits (ValueError) are the caller's
    mistakes too, not the model's."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"JSON body is not UTF-8 ({exc.reason} at byte {exc.start}): "
                           "send UTF-8 JSON.") from None
    except RecursionError:
        raise RequestError("JSON body is nested too deeply: send a flat object like "
                           '{"url": "https://..."}.') from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"invalid JSON body: {exc}") from None
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) ...; use sys.set_..."
        reason = str(exc).split(";")[0]  # the rest advises the server, not the caller
        raise RequestError(f"JSON body holds a number too long to read ({reason}): send "
                           "numbers of at most a few digits.") from None


def parse_json_request(body: bytes) -> ImageRequest:
    """`{"url"|"image"|"b64": ..., "top_k"?: int, "logits"?: bool}` to an ImageRequest."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError('JSON body must be an object like {"url": "https://..."}.')
    top_k = payload.get("top_k", default_top_k())
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(f'"top_k" must be a positive integer, got {top_k!r}.')
    logits = payload.get("logits", False)
    if not isinstance(logits, bool):
        raise RequestError(f'"logits" must be true or false, got {logits!r}.')
    if "image" in payload or "b64" in payload:
        raw = decode_base64(payload.get("image", payload.get("b64")))
    elif "url" in payload:
        raw = _fetch_url(payload["url"])
    else:
        raise RequestError('JSON body needs "url" or "image" (base64 image data).')
    return ImageRequest(load_image_bytes(raw), top_k, logits)


class _BatchPosition:
    """Which request of a TorchServe batch the toolkit is on.

    With SAGEMAKER_TS_BATCH_SIZE > 1, sagemaker-inference 1.10.1 runs a batch's requests through
    input_fn / predict_fn / output_fn one after another, passing the first request's Content-Type
    and Accept for all and never the index; TorchServe replaces `context.request_processor` (one
    header holder per request) for every batch. Counting input_fn calls per request_processor
    list gives the index, so each request is read with its own headers and answered with its own
    status. (The list is held, so its identity cannot be reused by a new one.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch: Any = None
        self._index = -1

    def advance(self, context: Any) -> tuple[int, dict[str, str]]:
        processors = getattr(context, "request_processor", None) or []
        with self._lock:
            if processors is not self._batch:
                self._batch, self._index = processors, -1
            self._index += 1
            index = self._index
        if index >= len(processors):
            return 0, {}
        return index, _request_headers(processors, index)


def _request_headers(processors: list[Any], index: int) -> dict[str, str]:
    """Request `index`'s headers in a TorchServe batch, names lower-cased."""
    headers = processors[index].get_request_properties() or {}
    return {k.lower(): v for k, v in headers.items()}


_POSITION = _BatchPosition()


def input_fn(request_body: Any, request_content_type: str | None,
             context: Any = None) -> ImageRequest | RequestError:
    """Decode a request body of one of the accepted content types. Under the toolkit (`context`
    given) a RequestError is returned, passed on by predict_fn and answered by output_fn, and the
    request's own Content-Type is read from the context (in a batch, the toolkit passes the
    first request's)."""
    position = 0
    if context is not None:
        position, headers = _POSITION.advance(context)
        request_content_type = headers.get("content-type") or request_content_type
    try:
        request = _decode(request_body, request_content_type)
        request.position = position
        return request
    except RequestError as exc:
        if context is None:
            raise
        exc.position = position
        return exc


def _decode(request_body: Any, request_content_type: str | None) -> ImageRequest:
    media = _media_type(request_content_type)
    if isinstance(request_body, str):
        request_body = request_body.encode("utf-8")
    body = bytes(request_body or b"")
    if not body:
        raise RequestError("empty request body: send an image or a JSON object.")
    check_size(body)
    if media in IMAGE_TYPES:
        return ImageRequest(load_image_bytes(body), default_top_k())
    if media == JSON_TYPE:
        return parse_json_request(body)
    raise RequestError(
        f"unsupported content type {request_content_type!r}: use one of "
        f"{', '.join(sorted(IMAGE_TYPES | {JSON_TYPE}))}.", 415)


# --- predict and output ------------------------------------------------------------------------


@dataclass
class Prediction:
    logits: list[float]
    probabilities: list[float]
    class_names: list[str]
    top_k: int
    want_logits: bool = False
    position: int = 0


def predict_fn(input_object: ImageRequest | RequestError,
               model: LoadedModel) -> Prediction | RequestError:
    """Preprocess like validation, run the network, softmax (one request)."""
    return batch_predict_fn([input_object], model)[0]


def batch_predict_fn(inputs: list[ImageRequest | RequestError],
                     model: LoadedModel) -> list[Prediction | RequestError]:
    """Many decoded requests, one forward pass: one answer per input, in order. A RequestError
    from input_fn is passed on in its place, so a bad request fails alone. The local endpoint's
    batcher calls this; SageMaker's toolkit (sagemaker-inference 1.10.1) calls predict_fn per
    request, even in a TorchServe batch."""
    answers: list[Prediction | RequestError | None] = [
        x if isinstance(x, RequestError) else None for x in inputs]
    good = [(i, x) for i, x in enumerate(inputs) if isinstance(x, ImageRequest)]
    if good:
        tensor = torch.stack([model.transform(x.image) for _, x in good]).to(model.device)
        with torch.no_grad():
            logits = model.module(tensor).float().cpu()
        probabilities = torch.softmax(logits, dim=1)
    for row, (i, request) in enumerate(good):
        answers[i] = Prediction(logits[row].tolist(), probabilities[row].tolist(),
                                model.class_names, min(request.top_k, len(model.class_names)),
                                request.logits, request.position)
    return [a for a in answers if a is not None]


# The local endpoint's batcher runs batch_predict_fn in place of predict_fn only while predict_fn
# says it is batch_predict_fn's batch of one: code that replaces predict_fn alone (a patched or
# customised model) is served through its own predict_fn, one request at a time.
predict_fn.batch_step = batch_predict_fn  # type: ignore[attr-defined]


def response_content_type(accept: str | None, prediction: Prediction | None = None) -> str:
    """The content type output_fn produces for `accept` (first supported entry of a list)."""
    entries = [_media_type(a) for a in (accept or "").split(",")] or [""]
    for media in entries:
        if media == LOGITS_TYPE:
            return LOGITS_TYPE
        if media in {"", "*/*", "application/*", JSON_TYPE}:
            return LOGITS_TYPE if prediction is not None and prediction.want_logits else JSON_TYPE
    raise RequestError(
        f"unsupported Accept type {accept!r}: use {JSON_TYPE} or {LOGITS_TYPE}.", 406)


def output_fn(prediction: Prediction | RequestError, accept: str | None,
              context: Any = None) -> Any:
    """JSON top-k labels and probabilities, or the original's `[[logits]]`. Under the toolkit
    (`context` given): (body, content type), and a client error is answered here with its
    status and a one-line message (raised, the toolkit would add the traceback to the body)."""
    if context is None:
        if isinstance(prediction, RequestError):
            raise prediction
        return _render(prediction, accept)
    # In a TorchServe batch: this request's own Accept, status and content type (see
    # _BatchPosition); a lone request is index 0.
    position = prediction.position
    processors = getattr(context, "request_processor", None) or []
    if 0 < position < len(processors):
        accept = _request_headers(processors, position).get("accept") or accept
    try:
        if isinstance(prediction, RequestError):
            raise prediction
        out_type = response_content_type(accept, prediction)
        if position:
            context.set_response_content_type(position, out_type)
        return _render(prediction, accept), out_type
    except RequestError as exc:
        context.set_response_status(code=exc.status_code, phrase=exc.phrase, idx=position)
        return exc.message, "text/plain"


def _render(prediction: Prediction, accept: str | None) -> str:
    if response_content_type(accept, prediction) == LOGITS_TYPE:
        return json.dumps([prediction.logits])
    order = sorted(range(len(prediction.probabilities)),
                   key=lambda i: prediction.probabilities[i], reverse=True)[: prediction.top_k]
    top = [{"label": prediction.class_names[i], "probability": prediction.probabilities[i]}
           for i in order]
    return json.dumps({"label": top[0]["label"], "probability": top[0]["probability"],
                       "predictions": top})


def handle(model: LoadedModel, body: Any, content_type: str | None,
           accept: str | None) -> tuple[str, str]:
    """All three steps for one request: returns (response body, response content type).
    Raises RequestError for the client's mistakes."""
    response_content_type(accept)  # an unsupported Accept fails before any work
    prediction = predict_fn(_decode(body, content_type), model)
    assert isinstance(prediction, Prediction)
    return _render(prediction, accept), response_content_type(accept, prediction)
