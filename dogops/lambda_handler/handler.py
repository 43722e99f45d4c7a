"""AWS Lambda handler: the prediction front door in front of the SageMaker endpoint.

Zipped alone into the function package, so it imports only boto3 and the stdlib.

Environment:
    ENDPOINT_NAME                   the SageMaker endpoint to call (required; set by the flow).
    SAGEMAKER_RUNTIME_ENDPOINT_URL  optional runtime URL (the local backend's endpoint server).
    TOP_K                           predictions to return (default 5).
    READ_TIMEOUT_S / CONNECT_TIMEOUT_S
                                    endpoint timeouts (default 25 / 5 s; keep the read timeout
                                    below the function timeout so a slow model answers 504).

Events accepted:
    {"url": "https://..."}                      the original project's test event
    {"image": "<base64 JPEG or PNG>"}           image bytes inline
    API Gateway (REST or HTTP) / function URL   `body` holding one of the above as JSON, or the
                                                raw image (base64 with `isBase64Encoded`); or
                                                `?url=...` on a GET.

Responses are API Gateway proxy shaped: `{"statusCode", "headers", "body": <JSON string>}`:
200 with `label`, `probability` and `predictions`; 400 for a bad event; the model's own 4xx
(400, 406, 413, 415) with the first line of its message for a request it rejects; 413 for an
oversized image; 415 for a body that is neither JSON nor an image; 500 when the function is
misconfigured; 502 when the endpoint or model fails or cannot be reached; 503 when it is busy;
504 when it times out. Never 200 on failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

logger = logging.getLogger("dogops.lambda")

# SageMaker real-time endpoints take payloads up to 6 MB (and so does a Lambda request).
MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_URL_LENGTH = 2048
EXPECTED = (
    'Send {"url": "https://.../dog.jpg"}, {"image": "<base64 JPEG or PNG>"}, or an API Gateway / '
    "function URL request whose body is one of these JSON objects or the raw image bytes."
)

# One client per (endpoint URL, timeouts), created on first use and reused by warm invocations.
_clients: dict[tuple[str | None, float, float], Any] = {}


class HandlerError(Exception):
    """A failure with the HTTP status the function should answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------
# Entry point


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        endpoint_name = os.environ.get("ENDPOINT_NAME", "").strip()
        if not endpoint_name:
            raise HandlerError(
                500,
                "ENDPOINT_NAME is not set: configure the function's environment with the "
                "SageMaker endpoint name.",
            )
        body, content_type = parse_event(event)
        payload = invoke(endpoint_name, body, content_type)
        return respond(200, summarise(payload, _top_k()))
    except HandlerError as exc:
        if exc.status >= 500:
            logger.error("answering %s: %s", exc.status, exc.message)
        return respond(exc.status, {"error": exc.message})
    except Exception:  # noqa: BLE001 - a bug here must still answer with a status, not 200
        logger.exception("unexpected error")
        return respond(500, {"error": "Internal error in the prediction function."})


def respond(status: int, document: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(document),
    }


# --------------------------------------------------------------------------------------------
# Events


def parse_event(event: Any) -> tuple[bytes, str]:
    """Turn any accepted event into (request body, content type) for the endpoint."""
    if not isinstance(event, dict) or not event:
        raise HandlerError(400, f"The event must be a non-empty JSON object. {EXPECTED}")
    if any(key in event for key in ("body", "requestContext", "httpMethod", "rawPath")):
        return _from_http_event(event)
    return _from_payload(event)


def _from_payload(payload: dict[str, Any]) -> tuple[bytes, str]:
    if "url" in payload:
        url = payload["url"]
        if (
            not isinstance(url, str)
            or not url.lower().startswith(("http://", "https://"))
            or len(url) > MAX_URL_LENGTH
        ):
            raise HandlerError(400, f"'url' must be an http(s) URL of an image. {EXPECTED}")
        request: dict[str, Any] = {"url": url}
        if os.environ.get("TOP_K"):
            request["top_k"] = _top_k()  # so the model returns at least as many as we show
        return json.dumps(request).encode(), "application/json"
    if "image" in payload:
        image = payload["image"]
        if not isinstance(image, str):
            raise HandlerError(400, f"'image' must be a base64 string. {EXPECTED}")
        data = _b64decode(image, "'image'")
        hint = payload.get("content_type")
        hint = hint.split(";")[0].strip().lower() if isinstance(hint, str) else ""
        if hint and not _is_image_type(hint):
            # Forwarded as given, base64 of any JSON would reach the model unchecked (a URL
            # this function refuses, say): 'image' carries image bytes only.
            raise HandlerError(
                415, f"unsupported content type {hint!r} for 'image': use image/jpeg, "
                f"image/png or application/x-image. {EXPECTED}")
        return _image(data, hint)
    raise HandlerError(400, f"The event has neither 'url' nor 'image'. {EXPECTED}")


def _is_image_type(media: str) -> bool:
    return media.startswith("image/") or media == "application/x-image"


def _from_http_event(event: dict[str, Any]) -> tuple[bytes, str]:
    raw_headers = event.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise HandlerError(400, f"'headers' must be an object of header names and values. "
                                f"{EXPECTED}")
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
    body = event.get("body")
    if body is None or body == "":
        query = event.get("queryStringParameters") or {}
        if isinstance(query, dict) and query.get("url"):
            return _from_payload({"url": query["url"]})
        raise HandlerError(400, f"The request has no body. {EXPECTED}")
    if not isinstance(body, str):
        raise HandlerError(400, f"The request body must be a string. {EXPECTED}")
    try:  # a JSON event's "\ud800" is a lone surrogate, which UTF-8 cannot encode
        raw = (_b64decode(body, "The request body") if event.get("isBase64Encoded")
               else body.encode())
    except UnicodeEncodeError:
        raise HandlerError(400, f"The request body is not valid Unicode. {EXPECTED}") from None
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    looks_json = raw.lstrip()[:1] == b"{"
    if content_type == "application/json" or (looks_json and not content_type.startswith("image/")):
        try:
            payload = json.loads(raw)
        except RecursionError:  # nesting deeper than the parser's recursion limit
            raise HandlerError(400, f"The JSON body is nested too deeply. {EXPECTED}") from None
        except ValueError:  # bad syntax or encoding, or an integer over 4,300 digits
            raise HandlerError(400, f"The request body is not valid JSON. {EXPECTED}") from None
        if not isinstance(payload, dict):
            raise HandlerError(400, f"The JSON body must be an object. {EXPECTED}")
        return _from_payload(payload)
    if _is_image_type(content_type) or _sniff(raw):
        return _image(raw, content_type)
    raise HandlerError(415, f"Unsupported request body ({content_type or 'no type'}). {EXPECTED}")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HandlerError(400, f"{what} is not valid base64. {EXPECTED}") from None


def _sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return ""


def _image(data: bytes, content_type: str) -> tuple[bytes, str]:
    if not data:
        raise HandlerError(400, f"The image is empty. {EXPECTED}")
    if len(data) > MAX_IMAGE_BYTES:
        raise HandlerError(
            413, f"The image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes."
        )
    return data, _sniff(data) or content_type or "application/x-image"


# --------------------------------------------------------------------------------------------
# The endpoint call


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def _top_k() -> int:
    try:
        return max(1, int(os.environ.get("TOP_K", "5")))
    except ValueError:
        return 5


def get_client() -> Any:
    """The sagemaker-runtime client for the current environment (cached across invocations)."""
    endpoint_url = os.environ.get("SAGEMAKER_RUNTIME_ENDPOINT_URL") or None
    read_timeout = _float_env("READ_TIMEOUT_S", 25.0)
    connect_timeout = _float_env("CONNECT_TIMEOUT_S", 5.0)
    key = (endpoint_url, read_timeout, connect_timeout)
    if key not in _clients:
        _clients[key] = boto3.client(
            "sagemaker-runtime",
            endpoint_url=endpoint_url,
            config=Config(
                read_timeout=read_timeout,
                connect_timeout=connect_timeout,
                # One attempt: a retried slow call would outlive the function's own timeout.
                retries={"total_max_attempts": 1, "mode": "standard"},
            ),
        )
    return _clients[key]


def invoke(endpoint_name: str, body: bytes, content_type: str) -> bytes:
    """Call the endpoint; map every failure to a HandlerError with the right status."""
    try:
        response = get_client().invoke_endpoint(
            EndpointName=endpoint_name,
            Body=body,
            ContentType=content_type,
            Accept="application/json",
        )
        return bytes(response["Body"].read())
    except (ReadTimeoutError, ConnectTimeoutError):
        raise HandlerError(504, f"The endpoint {endpoint_name} did not answer in time.") from None
    except (NoRegionError, NoCredentialsError) as exc:
        raise HandlerError(500, f"The function is misconfigured: {exc}") from None
    except ClientError as exc:
        raise _from_client_error(endpoint_name, exc) from None
    except BotoCoreError as exc:
        raise HandlerError(502, f"Could not reach the endpoint {endpoint_name}: {exc}") from None


def _from_client_error(endpoint_name: str, exc: ClientError) -> HandlerError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    original = exc.response.get("OriginalStatusCode")
    if code == "ModelError" and isinstance(original, int):
        if 400 <= original < 500:
            # The model rejected the request (bad image, unsupported type): the caller's fault,
            # with the model's own status (400, 406, 413, 415). Only the first line of its
            # message: a container that raised puts its traceback below it.
            detail = str(exc.response.get("OriginalMessage") or message).strip()
            detail = detail.splitlines()[0] if detail else "no reason given"
            return HandlerError(original, f"The model rejected the request: {detail}")
        return HandlerError(502, f"The model failed ({original}); see the endpoint's log.")
    if status == 413:
        return HandlerError(413, message or "The request is too large for the endpoint.")
    busy_codes = ("ServiceUnavailable", "ModelNotReadyException", "ThrottlingException")
    if code in busy_codes or status in (429, 503):
        return HandlerError(503, f"The endpoint {endpoint_name} is busy; retry later. {message}")
    if 400 <= status < 500 and code not in ("ValidationError", "AccessDeniedException"):
        return HandlerError(400, f"The endpoint rejected the request: {message}")
    # ValidationError here means the endpoint does not exist; access denied is our own IAM.
    return HandlerError(502, f"The endpoint {endpoint_name} failed ({code or status}): {message}")


# --------------------------------------------------------------------------------------------
# The answer


def summarise(payload: bytes, top_k: int) -> dict[str, Any]:
    """`label`, `probability` and the top-k `predictions`, from either answer shape the model
    may give: a JSON object with those keys, or raw logits `[[...]]` like the original."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise HandlerError(502, "The endpoint answered with something other than JSON.") from None
    if isinstance(data, list):
        return _from_logits(data, top_k)
    if not isinstance(data, dict):
        raise HandlerError(502, "The endpoint's answer has an unexpected shape.")
    predictions = data.get("predictions")
    predictions = list(predictions)[:top_k] if isinstance(predictions, list) else []
    label = data.get("label")
    probability = data.get("probability")
    if label is None and predictions and isinstance(predictions[0], dict):
        label = predictions[0].get("label")
        probability = predictions[0].get("probability")
    if label is None:
        raise HandlerError(502, "The endpoint's answer has no label or predictions.")
    return {**data, "label": label, "probability": probability, "predictions": predictions}


def _from_logits(data: list[Any], top_k: int) -> dict[str, Any]:
    row = data[0] if data and isinstance(data[0], list) else data
    try:
        logits = [float(x) for x in row]
    except (TypeError, ValueError):
        raise HandlerError(502, "The endpoint's answer has an unexpected shape.") from None
    if not logits:
        raise HandlerError(502, "The endpoint answered with no scores.")
    peak = max(logits)
    exps = [math.exp(x - peak) for x in logits]
    total = sum(exps)
    ranked = sorted(range(len(exps)), key=lambda i: exps[i], reverse=True)[:top_k]
    predictions = [{"label": str(i), "probability": exps[i] / total} for i in ranked]
    return {
        "label": predictions[0]["label"],
        "probability": predictions[0]["probability"],
        "predictions": predictions,
    }
