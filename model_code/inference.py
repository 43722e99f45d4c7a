"""Serving code for the SageMaker PyTorch serving contract (`model_fn`, `input_fn`, `predict_fn`,
`output_fn`), also used by the local backend's endpoint process.

Requests: `image/jpeg`, `image/png`, `application/x-image` bytes, or `application/json` with
`{"url": ...}` (the original Lambda's event), `{"image": "<base64>"}` or `{"b64": ...}`, plus
optional `"top_k"` and `"logits": true`. Responses: `application/json`
`{"label", "probability", "predictions": [{"label", "probability"}, ...]}`; the original's raw
logits `[[...]]` with Accept `application/x-logits+json` or `"logits": true`.

Every bad request raises `RequestError`, whose `status_code` the serving process returns
(400 bad input, 413 too large, 415 unsupported content type, 406 unsupported accept type).

URL fetching is bounded, because the endpoint would otherwise fetch anything for anyone
(server-side request forgery): only allowed schemes (`DOGOPS_ALLOWED_URL_SCHEMES`, default
`https,s3`) and hosts (`DOGOPS_ALLOWED_URL_HOSTS`, default any public host); the host is resolved
once and private, loopback and link-local addresses are refused unless the host is listed
explicitly; the connection goes to the checked address (no DNS re-binding); redirects are not
followed; a timeout (`DOGOPS_URL_TIMEOUT_S`, default 5) and a size limit
(`DOGOPS_MAX_IMAGE_BYTES`, default 10 MB, which also bounds request bodies).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
DEFAULT_TOP_K = 5
_CHUNK = 64 * 1024


class RequestError(ValueError):
    """A client error; `status_code` is the HTTP status the serving process should answer."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


# --- settings, read per request so tests and operators can change them without a restart -----


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def max_image_bytes() -> int:
    return _env_int("DOGOPS_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def url_timeout_s() -> float:
    raw = os.environ.get("DOGOPS_URL_TIMEOUT_S", "").strip()
    return float(raw) if raw else 5.0


def _env_set(name: str, default: str) -> set[str]:
    raw = os.environ.get(name, default)
    return {item.strip().lower() for item in raw.split(",") if item.strip()}


def allowed_schemes() -> set[str]:
    return _env_set("DOGOPS_ALLOWED_URL_SCHEMES", "https,s3")


def allowed_hosts() -> set[str]:
    """Explicitly allowed hosts; an entry starting with "." also allows its sub-domains."""
    return _env_set("DOGOPS_ALLOWED_URL_HOSTS", "")


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


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def check_size(body: bytes) -> None:
    limit = max_image_bytes()
    if len(body) > limit:
        raise RequestError(
            f"request body is {len(body)} bytes, over the {limit}-byte limit "
            f"(DOGOPS_MAX_IMAGE_BYTES): send a smaller image.", 413)


def load_image_bytes(payload: bytes) -> Image.Image:
    """Decode image bytes fully as RGB (PNG with alpha, greyscale, palette all work)."""
    if not payload:
        raise RequestError("empty image: the request carried no image bytes.")
    check_size(payload)
    try:
        with Image.open(io.BytesIO(payload)) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise RequestError(f"image has too many pixels: {exc}", 413) from exc
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


def _host_allowed(host: str, hosts: set[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h or (h.startswith(".") and host.endswith(h)) for h in hosts)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def check_url(url: str) -> tuple[str, str, int, str | None]:
    """Check scheme and host against the allow-lists and resolve the host once.

    Returns (scheme, host, port, address to connect to; None for s3). Raises RequestError.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RequestError(f"malformed URL {url!r}: {exc}") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    schemes = allowed_schemes()
    if scheme not in schemes:
        raise RequestError(
            f"URL scheme {scheme or '(none)'!r} is not allowed: use one of "
            f"{', '.join(sorted(schemes))} (DOGOPS_ALLOWED_URL_SCHEMES).")
    if not host:
        raise RequestError(f"URL {url!r} has no host.")
    hosts = allowed_hosts()
    listed = _host_allowed(host, hosts)
    if hosts and not listed:
        raise RequestError(
            f"host {host!r} is not in the allowed hosts (DOGOPS_ALLOWED_URL_HOSTS).")
    if scheme == "s3":
        return scheme, host, 0, None
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RequestError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not listed:
        private = [a for a in addresses if not _is_public(a)]
        if private:
            raise RequestError(
                f"host {host!r} resolves to a private, loopback or link-local address "
                f"({private[0]}): refused. List the host in DOGOPS_ALLOWED_URL_HOSTS to allow it.")
    return scheme, host, port, addresses[0]


def _connection(scheme: str, host: str, port: int, address: str,
                timeout: float) -> http.client.HTTPConnection:
    """A connection to the already-checked `address` that still sends `host` (Host, TLS SNI and
    certificate checks), so a second DNS answer cannot point it elsewhere."""
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def create_connection(addr: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        return socket.create_connection((address, addr[1]), *args, **kwargs)

    conn._create_connection = create_connection  # type: ignore[attr-defined]
    return conn


def _read_limited(read: Any, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise RequestError("image download timed out (DOGOPS_URL_TIMEOUT_S).")
        chunk = read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise RequestError(
                f"image at the URL is over the {limit}-byte limit (DOGOPS_MAX_IMAGE_BYTES).", 413)
        chunks.append(chunk)


def fetch_http(url: str, scheme: str, host: str, port: int, address: str) -> bytes:
    """GET one URL; redirects are refused rather than followed (they could lead anywhere)."""
    timeout, limit = url_timeout_s(), max_image_bytes()
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _connection(scheme, host, port, address, timeout)
    try:
        conn.request("GET", target, headers={"Accept": "image/*", "User-Agent": "dogops/1"})
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise RequestError(
                f"URL {url} redirects (HTTP {response.status}) and redirects are not followed: "
                f"send the final image URL.")
        if response.status != 200:
            raise RequestError(f"URL {url} answered HTTP {response.status}, not an image.")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise RequestError(
                f"image at {url} is {length} bytes, over the {limit}-byte limit "
                f"(DOGOPS_MAX_IMAGE_BYTES).", 413)
        return _read_limited(response.read, limit, deadline)
    except (OSError, http.client.HTTPException) as exc:
        raise RequestError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def fetch_s3(url: str) -> bytes:
    """Read an `s3://bucket/key` object with boto3 (honours AWS_ENDPOINT_URL), size-bounded."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise RequestError("s3:// URLs need boto3, which this server lacks: use https.") from exc
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not key:
        raise RequestError(f"S3 URL {url} has no object key.")
    timeout, limit = url_timeout_s(), max_image_bytes()
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"max_attempts": 1})
    try:
        obj = boto3.client("s3", config=config).get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength", 0)) > limit:
            raise RequestError(
                f"S3 object {url} is {obj['ContentLength']} bytes, over the {limit}-byte limit "
                f"(DOGOPS_MAX_IMAGE_BYTES).", 413)
        return _read_limited(obj["Body"].read, limit, time.monotonic() + timeout)
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore errors: missing object, access denied
        raise RequestError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc


def fetch_url(url: Any) -> bytes:
    """The bytes at an allowed URL, within the timeout and size limit."""
    if not isinstance(url, str) or not url.strip():
        raise RequestError('"url" must be a non-empty string.')
    scheme, host, port, address = check_url(url.strip())
    if scheme == "s3":
        return fetch_s3(url.strip())
    assert address is not None
    return fetch_http(url.strip(), scheme, host, port, address)


def parse_json_request(body: bytes) -> ImageRequest:
    """`{"url"|"image"|"b64": ..., "top_k"?: int, "logits"?: bool}` to an ImageRequest."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"invalid JSON body: {exc}") from exc
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
        raw = fetch_url(payload["url"])
    else:
        raise RequestError('JSON body needs "url" or "image" (base64 image data).')
    return ImageRequest(load_image_bytes(raw), top_k, logits)


def input_fn(request_body: Any, request_content_type: str | None) -> ImageRequest:
    """Decode a request body of one of the accepted content types."""
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


def predict_fn(input_object: ImageRequest, model: LoadedModel) -> Prediction:
    """Preprocess like validation, run the network, softmax."""
    tensor = model.transform(input_object.image).unsqueeze(0).to(model.device)
    with torch.no_grad():
        logits = model.module(tensor)[0].float().cpu()
    probabilities = torch.softmax(logits, dim=0)
    return Prediction(logits.tolist(), probabilities.tolist(), model.class_names,
                      min(input_object.top_k, len(model.class_names)), input_object.logits)


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


def output_fn(prediction: Prediction, accept: str | None) -> str:
    """JSON top-k labels and probabilities, or the original's `[[logits]]`."""
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
    prediction = predict_fn(input_fn(body, content_type), model)
    return output_fn(prediction, accept), response_content_type(accept, prediction)
