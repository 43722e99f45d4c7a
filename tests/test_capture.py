"""Data capture and the monitor's figures, without an endpoint: SageMaker's capture line format
(written and read back), the reader on handmade lines in both stores (a folder and the moto
server's S3), the aggregations, the local capture writer's sampling, drop and failure counting,
and the settings' bounds."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from dogops import capture, monitor
from dogops.backends import store_for
from dogops.capture import capture_record, jsonl, parse_line, read_captures
from dogops.errors import UserInputError
from dogops.local.objects import LocalObjects
from dogops.settings import Settings, load_settings

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes\x00\x01"


def answer(label: str, probability: float, k: int = 3) -> bytes:
    top = [{"label": label, "probability": probability}] + [
        {"label": f"other-{i}", "probability": (1 - probability) / k} for i in range(k - 1)]
    return json.dumps({"label": label, "probability": probability, "predictions": top}).encode()


def line(label: str, probability: float, when: datetime, **kw: Any) -> dict[str, Any]:
    return capture_record(JPEG, "image/jpeg", answer(label, probability),
                          "application/json", when=when, **kw)


def test_capture_line_has_sagemakers_shape_and_reads_back() -> None:
    when = datetime(2026, 12, 1, 17, 25, 49, 123456, tzinfo=UTC)
    record = line("001.Beagle", 0.75, when, event_id="e-1", inference_id="my-id")
    # The fields and values SageMaker writes (Model Monitor developer guide, "Capture data").
    assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
    assert record["eventVersion"] == "0"
    assert record["eventMetadata"] == {"eventId": "e-1", "inferenceTime": "2026-12-01T17:25:49Z",
                                       "inferenceId": "my-id"}
    data_in = record["captureData"]["endpointInput"]
    assert data_in == {"observedContentType": "image/jpeg", "mode": "INPUT",
                       "data": base64.b64encode(JPEG).decode(), "encoding": "BASE64"}
    data_out = record["captureData"]["endpointOutput"]
    assert data_out["mode"] == "OUTPUT" and data_out["encoding"] == "JSON"
    assert json.loads(data_out["data"])["label"] == "001.Beagle"

    event = parse_line(jsonl([record]).decode().strip())
    assert (event.event_id, event.label, event.probability, event.top_k) == (
        "e-1", "001.Beagle", 0.75, 3)
    assert event.inference_time == when.replace(microsecond=0)
    # The event keeps no trace of the image.
    assert "ZmFrZS" not in event.model_dump_json() and "fake" not in event.model_dump_json()


def test_reader_takes_sagemakers_own_lines_base64_outputs_and_skips_bad_lines() -> None:
    # A line as SageMaker writes it when the output type is not in JsonContentTypes: BASE64.
    sagemaker_line = json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "application/x-image", "mode": "INPUT",
                              "data": base64.b64encode(JPEG).decode(), "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": base64.b64encode(answer("a", 0.4)).decode(),
                               "encoding": "BASE64"}},
        "eventMetadata": {"eventId": "x", "inferenceTime": "2022-02-14T17:25:06Z"},
        "eventVersion": "0"})
    event = parse_line(sagemaker_line)
    assert (event.label, event.probability) == ("a", 0.4)
    # An answer that is not a top-k JSON (logits, an error text) counts as a request only.
    logits = capture_record(JPEG, "image/jpeg", b"[[0.1, 0.2]]", "application/json")
    assert parse_line(json.dumps(logits)).label is None
    with pytest.raises((ValueError, KeyError)):
        parse_line('{"not": "a capture"}')


def write_day(root: Path, endpoint: str, lines: list[dict[str, Any]], name: str) -> None:
    when = datetime.fromisoformat(lines[0]["eventMetadata"]["inferenceTime"].replace("Z", "+00:00"))
    folder = root / "dogops" / "captures" / capture.hour_folder(endpoint, when)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(jsonl(lines))


def test_reader_and_figures_on_handmade_captures(tmp_path: Path) -> None:
    d1 = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC)
    d2 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
    write_day(tmp_path, "ep", [line("a", 0.9, d1), line("b", 0.3, d1)], "00-00-000-x.jsonl")
    write_day(tmp_path, "ep", [line("a", 0.6, d2), line("a", 0.45, d2)], "00-00-000-y.jsonl")
    # A bad line, another endpoint, a temp file and a day outside the window are not counted.
    folder = tmp_path / "dogops/captures" / capture.hour_folder("ep", d2)
    (folder / "01-00-000-z.jsonl").write_text("{broken\n")
    write_day(tmp_path, "other", [line("b", 0.1, d2)], "00-00-000-o.jsonl")
    (folder / ".tmp.jsonl").write_bytes(jsonl([line("b", 0.1, d2)]))
    write_day(tmp_path, "ep", [line("c", 0.99, datetime(2026, 11, 20, tzinfo=UTC))], "old.jsonl")

    read = read_captures(LocalObjects(tmp_path), "dogops/captures", "ep",
                         date(2026, 11, 29), date(2026, 12, 1))
    assert read.files == 3 and read.bad_lines == 1
    assert read.uri == f"{tmp_path.resolve().as_uri()}/dogops/captures"
    assert [e.label for e in read.events] == ["a", "b", "a", "a"]

    manifest = json.dumps({"version": 1, "files": {
        "test/a/1.jpg": {}, "test/b/1.jpg": {}, "test/b/2.jpg": {}, "test/c/1.jpg": {},
        "train/a/1.jpg": {}, "valid/b/1.jpg": {}}}).encode()
    test_counts = monitor.split_class_counts(manifest)
    assert test_counts == {"a": 1, "b": 2, "c": 1}
    report = monitor.build_report("ep", date(2026, 11, 29), date(2026, 12, 1), "file:///x",
                                  read.events, read.files, read.bad_lines, test_counts, 0.5)
    assert report.requests_per_day == {"2026-11-29": 0, "2026-11-30": 2, "2026-12-01": 2}
    assert report.mean_top1 == pytest.approx((0.9 + 0.3 + 0.6 + 0.45) / 4)
    assert (report.below_threshold, report.share_below_threshold) == (2, 0.5)
    rows = {r.label: r for r in report.classes}
    assert (rows["a"].predicted, rows["a"].predicted_share, rows["a"].test_share) == (
        3, 0.75, 0.25)
    assert (rows["b"].predicted, rows["b"].test_images) == (1, 2)
    assert (rows["c"].predicted, rows["c"].test_share) == (0, 0.25)  # in the test split only
    table = monitor.classes_table(report)
    assert table[0]["class"] == "a" and table[0]["difference"] == 0.5
    markdown = monitor.summary_markdown(report, 100)
    assert "captured requests: **4**" in markdown and "(50.0 %)" in markdown
    png = monitor.plot_png(report)
    assert png is not None and png.startswith(b"\x89PNG")


def test_no_captures_says_how_to_turn_capture_on() -> None:
    report = monitor.build_report("ep", date(2026, 12, 1), date(2026, 12, 1), "s3://b/p/captures",
                                  [], 0, 0, {"a": 1}, 0.5)
    assert report.requests == 0 and report.mean_top1 is None
    assert report.share_below_threshold is None
    assert "DOGOPS_ENDPOINT__CAPTURE_PERCENT" in monitor.summary_markdown(report, 0)
    assert monitor.plot_png(report) is None


@pytest.mark.aws
def test_the_same_reader_reads_captures_in_s3(moto: str, aws_settings: Settings) -> None:
    from dogops.aws.clients import AwsClients

    s3 = AwsClients(aws_settings.aws).client("s3")
    s3.create_bucket(Bucket=aws_settings.aws.bucket)
    when = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)
    key = f"{capture.capture_key_prefix(aws_settings)}/{capture.hour_folder('ep', when)}/f.jsonl"
    s3.put_object(Bucket=aws_settings.aws.bucket, Key=key,
                  Body=jsonl([line("a", 0.8, when), line("b", 0.2, when)]))
    from dogops.aws.objects import S3Objects

    store = store_for(aws_settings).objects(aws_settings.aws.bucket)
    assert isinstance(store, S3Objects)
    read = read_captures(store, capture.capture_key_prefix(aws_settings), "ep",
                         date(2026, 12, 1), date(2026, 12, 1))
    assert [(e.label, e.probability) for e in read.events] == [("a", 0.8), ("b", 0.2)]
    assert read.uri == capture.capture_s3_uri(aws_settings) == (
        f"s3://{aws_settings.aws.bucket}/dogops/captures")


# -- the local endpoint's writer, driven directly ----------------------------------------------


def _written(root: Path) -> list[dict[str, Any]]:
    files = sorted(root.rglob("*.jsonl"))
    return [json.loads(x) for p in files for x in p.read_text().splitlines()]


def test_writer_samples_and_writes_sagemakers_layout(tmp_path: Path) -> None:
    from dogops.local.endpoint_server.capture import CaptureWriter

    everything = CaptureWriter(tmp_path / "all", "ep", 100)
    for i in range(20):
        everything.offer(JPEG, "image/jpeg", answer(f"c{i % 2}", 0.5), "application/json", None)
    everything.close()
    assert everything.status()["written"] == 20 and everything.dropped == 0
    files = list((tmp_path / "all").rglob("*.jsonl"))
    now = datetime.now(UTC)
    # <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl (or the previous hour at a boundary)
    rel = files[0].relative_to(tmp_path / "all").parts
    assert rel[:2] == ("ep", "AllTraffic") and rel[2] == f"{now:%Y}" and len(rel) == 7
    assert len(_written(tmp_path / "all")) == 20

    some = CaptureWriter(tmp_path / "some", "ep", 30)
    for _ in range(2000):
        some.offer(JPEG, "image/jpeg", answer("a", 0.5), "application/json", None)
    some.close()
    assert 450 <= some.written <= 750 and some.written == some.sampled  # ~30 % of 2000


def test_writer_drops_when_full_and_counts_failed_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dogops.local.endpoint_server import capture as server_capture

    # The writer thread stuck behind a slow disk: the queue fills and further captures are
    # dropped and counted instead of making the request wait.
    gate = threading.Event()
    original = server_capture.write_atomic

    def slow_write(path: Path, data: bytes) -> None:
        gate.wait(10)
        original(path, data)

    monkeypatch.setattr(server_capture, "write_atomic", slow_write)
    writer = server_capture.CaptureWriter(tmp_path / "slow", "ep", 100, queue_size=5)
    for _ in range(50):
        writer.offer(JPEG, "image/jpeg", answer("a", 0.5), "application/json", None)
    assert writer.dropped >= 50 - 5 - 1
    gate.set()
    writer.close()
    assert writer.written + writer.dropped == 50 and writer.written >= 5
    monkeypatch.undo()

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the capture folder should be")
    failing = server_capture.CaptureWriter(blocked, "ep", 100)
    failing.offer(JPEG, "image/jpeg", answer("a", 0.5), "application/json", None)
    failing.close()
    assert (failing.written, failing.failed) == (0, 1)


@pytest.mark.parametrize("env, problem", [
    ({"endpoint": {"capture_percent": 101}}, "endpoint.capture_percent"),
    ({"endpoint": {"capture_percent": -1}}, "endpoint.capture_percent"),
    ({"monitor": {"low_confidence_threshold": 1.5}}, "monitor.low_confidence_threshold"),
    ({"monitor": {"lookback_days": 0}}, "monitor.lookback_days"),
])
def test_capture_and_monitor_settings_are_bounded(env: dict[str, Any], problem: str) -> None:
    with pytest.raises(UserInputError, match=problem):
        load_settings(**env)
    assert Settings().endpoint.capture_percent == 0  # off unless asked
