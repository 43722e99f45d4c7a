"""Endpoint data capture in SageMaker's own format, written and read the same way on both backends.

SageMaker (DataCaptureConfig) writes JSON Lines objects under
`<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`, one line per captured
request (SageMaker Model Monitor developer guide, "Capture data"):

    {"captureData": {
        "endpointInput":  {"observedContentType": "image/jpeg", "mode": "INPUT",
                           "data": "<base64>", "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "{\\"label\\": ...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-12-02T05:30:00Z"},
     "eventVersion": "0"}

`encoding` is CSV or JSON for the content types listed in CaptureContentTypeHeader and BASE64
for everything else (images). dogops lists `application/json` as JSON, so the predictions are
readable text and the images stay base64. The local endpoint writes the same lines to the local
object store (`<state>/store/<bucket>/<prefix>/captures/...`, the S3 layout), so one reader serves
both (`Store.objects`, `dogops.backends`).

Captured images are request data: they live next to the data set under the project prefix and are
kept or deleted with it. The reader never decodes or returns the input (`CapturedEvent` has no
field for it), so image bytes cannot reach a log or an artifact through the monitor.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from dogops.backends.base import ObjectReader
from dogops.settings import Settings

logger = logging.getLogger(__name__)

CAPTURE_FOLDER = "captures"
VARIANT = "AllTraffic"  # the one production variant dogops deploys (dogops.aws.endpoint)
JSON_CONTENT_TYPES = ["application/json"]  # CaptureContentTypeHeader.JsonContentTypes
EVENT_VERSION = "0"


# -- where captures live ---------------------------------------------------------------------------


def capture_key_prefix(settings: Settings) -> str:
    """`<prefix>/captures`: the DestinationS3Uri's key part (no trailing slash)."""
    return f"{settings.aws.prefix.strip('/')}/{CAPTURE_FOLDER}".lstrip("/")


def capture_s3_uri(settings: Settings) -> str:
    return f"s3://{settings.aws.bucket}/{capture_key_prefix(settings)}"


def local_capture_root(settings: Settings) -> Path:
    """The local object store's copy of `s3://<bucket>/<prefix>/captures`."""
    root = settings.state_dir.expanduser().resolve() / "store" / settings.aws.bucket
    return root / capture_key_prefix(settings)


def hour_folder(endpoint: str, when: datetime, variant: str = VARIANT) -> str:
    """`<endpoint>/<variant>/yyyy/mm/dd/hh`: SageMaker's folder for captures of that UTC hour."""
    return f"{endpoint}/{variant}/{when.astimezone(UTC):%Y/%m/%d/%H}"


# -- one capture line ------------------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _payload(body: bytes, content_type: str, mode: str) -> dict[str, str]:
    if _media_type(content_type) in JSON_CONTENT_TYPES:
        try:
            return {"observedContentType": content_type, "mode": mode,
                    "data": body.decode("utf-8"), "encoding": "JSON"}
        except UnicodeDecodeError:
            pass  # not text after all: stored as SageMaker stores any other type
    return {"observedContentType": content_type, "mode": mode,
            "data": base64.b64encode(body).decode("ascii"), "encoding": "BASE64"}


def capture_record(
    request: bytes, request_type: str, response: bytes, response_type: str,
    when: datetime | None = None, event_id: str | None = None,
    inference_id: str | None = None,
) -> dict[str, Any]:
    """One capture line (as a dict) for a request and the endpoint's answer."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    metadata: dict[str, str] = {
        "eventId": event_id or str(uuid.uuid4()),
        # SageMaker's own lines carry whole seconds in UTC ("2022-02-14T17:25:49Z").
        "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if inference_id:
        metadata["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": _payload(request, request_type, "INPUT"),
            "endpointOutput": _payload(response, response_type, "OUTPUT"),
        },
        "eventMetadata": metadata,
        "eventVersion": EVENT_VERSION,
    }


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()


class CapturedEvent(BaseModel):
    """What the monitor needs of one capture line. The input (the image) is deliberately absent."""

    event_id: str
    inference_time: datetime
    request_type: str
    label: str | None = None
    probability: float | None = None
    top_k: int = 0


def _output_text(output: dict[str, Any]) -> str:
    data = str(output.get("data", ""))
    if output.get("encoding") == "BASE64":
        return base64.b64decode(data).decode("utf-8")
    return data


def parse_line(line: str) -> CapturedEvent:
    """One capture line -> `CapturedEvent`; `ValueError` (or KeyError) when it is not one.

    A response that is not dogops's JSON top-k answer (an error text, the logits format) keeps
    `label` None: the request still counts, its prediction does not."""
    record = json.loads(line)
    capture = record["captureData"]
    metadata = record["eventMetadata"]
    when = datetime.fromisoformat(str(metadata["inferenceTime"]).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    event = CapturedEvent(
        event_id=str(metadata.get("eventId", "")), inference_time=when.astimezone(UTC),
        request_type=str(capture.get("endpointInput", {}).get("observedContentType", "")),
    )
    output = capture.get("endpointOutput")
    if not output:
        return event
    try:
        answer = json.loads(_output_text(output))
    except (ValueError, UnicodeDecodeError):
        return event
    if isinstance(answer, dict) and isinstance(answer.get("label"), str):
        probability = answer.get("probability")
        event.label = answer["label"]
        event.probability = float(probability) if isinstance(probability, int | float) else None
        event.top_k = len(answer.get("predictions") or [])
    return event


# -- reading ---------------------------------------------------------------------------------------


class CaptureRead(BaseModel):
    uri: str = Field(description="Where the captures were read: <bucket URI>/<prefix>/captures.")
    events: list[CapturedEvent]
    files: int
    bad_lines: int


def days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def read_captures(
    store: ObjectReader, key_prefix: str, endpoint: str, since: date, until: date,
    variant: str = VARIANT,
) -> CaptureRead:
    """Every capture line of `endpoint` from the UTC days `since`..`until`, oldest first.

    Lists one day folder at a time (the layout's yyyy/mm/dd), so a long history is not listed
    whole. A line that does not parse is counted, not fatal: one bad write must not hide a day."""
    events: list[CapturedEvent] = []
    files = bad = 0
    for day in days(since, until):
        folder = f"{key_prefix}/{endpoint}/{variant}/{day:%Y/%m/%d}/"
        for key in store.keys(folder):
            if not key.endswith(".jsonl"):
                continue
            body = store.read(key)
            if body is None:
                continue
            files += 1
            for line in body.decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    events.append(parse_line(line))
                except (ValueError, KeyError, TypeError):
                    bad += 1
    if bad:
        logger.warning("%d capture lines of %s could not be read", bad, endpoint)
    events.sort(key=lambda e: e.inference_time)
    return CaptureRead(uri=f"{store.uri}/{key_prefix}", events=events, files=files, bad_lines=bad)
