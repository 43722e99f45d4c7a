"""The local guarded rollout, end to end (issue 15's "Done when").

A live endpoint serves a trained model while two client threads send it test images without
pause. `dogops rollout` (its own process, reporting to the test's Prefect server) then rolls out:

1. a copy of that model whose `predict_fn` raises, with `--canary-percent 50 --bake-seconds 20`:
   it must roll back by itself, exit 3, print the figures, and leave the old model serving and
   answering correctly;
2. a copy with a harmless change (a new content version, the same answers): promoted, exit 0.

Throughout, every request must get an answer; the only 5xx allowed are the broken canary's, and
the endpoint's own counts (its `/dogops/status`) must agree with the clients'. The models come from
test_operations_flows.py's fixtures (trained in-process, 48 px).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_operations_flows import data_dir, model_dir, models

from dogops.results import TrainedModel
from dogops.settings import Settings

pytestmark = pytest.mark.slow
__all__ = ["data_dir", "models"]  # fixtures shared with test_operations_flows.py

NAME = "rollout-test"
REPO = Path(__file__).resolve().parents[1]
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Traffic:
    """Clients that keep asking the endpoint (container path `/invocations`: the model's own
    status) and record every answer's status and label, with the time it came back."""

    def __init__(self, base: str, image: bytes, clients: int = 2) -> None:
        self.base, self.image = base, image
        self.answers: list[tuple[float, int, str]] = []
        self.failures: list[str] = []  # no HTTP answer at all
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                f"{self.base}/invocations", data=self.image, method="POST",
                headers={"Content-Type": "image/jpeg", "Accept": "application/json"})
            try:
                with _HTTP.open(request, timeout=60) as response:
                    label = json.loads(response.read())["label"]
                    self.answers.append((time.monotonic(), response.status, label))
            except urllib.error.HTTPError as exc:
                exc.read()
                self.answers.append((time.monotonic(), exc.code, ""))
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)

    def statuses(self, start: float = 0.0, end: float = float("inf")) -> Counter[int]:
        return Counter(s for t, s, _ in list(self.answers) if start <= t <= end)


def _status(base: str) -> dict[str, Any]:
    with _HTTP.open(f"{base}/dogops/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def _rollout(model_folder: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": str(REPO), "DOGOPS_SCALING__MIN_CAPACITY": "1",
           "DOGOPS_SCALING__MAX_CAPACITY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dogops_cli.cli", "rollout", "--model-dir", str(model_folder),
         "--canary-percent", "50", "--bake-seconds", "20", "--state-dir", str(state_dir),
         "--endpoint-name", NAME],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _copy_with(model: TrainedModel, folder: Path, code: str) -> Path:
    shutil.copytree(model_dir(model), folder)
    inference = folder / "code" / "inference.py"
    inference.write_text(inference.read_text() + code)
    return folder


def test_broken_canary_rolls_back_and_a_good_model_is_promoted(
    prefect_harness: None, models: dict[str, TrainedModel], data_dir: Path, tmp_path: Path
) -> None:
    from dogops.local.backend import LocalBackend
    from dogops.local.endpoint import read_endpoint, stop_endpoint
    from dogops.registry import registry_for

    state = tmp_path / "state"
    settings = Settings(state_dir=state, endpoint={"name": NAME},
                        scaling={"min_capacity": 1, "max_capacity": 1})
    good = models["good"]
    broken = _copy_with(good, tmp_path / "broken", (
        "\n\ndef predict_fn(data, model):\n    raise RuntimeError('broken canary')\n"))
    same = _copy_with(good, tmp_path / "same", "\n# the same model, a new content version\n")
    image_path = sorted((data_dir / "test").rglob("*.jpg"))[0]
    expected = image_path.parent.name
    try:
        live = LocalBackend(settings).deploy(good, "run-1")
        assert live.runtime_endpoint_url
        base = live.runtime_endpoint_url
        before = _status(base)["invocations"]
        with Traffic(base, image_path.read_bytes()) as traffic:
            time.sleep(2)
            started = time.monotonic()
            first = _rollout(broken, state)
            rolled_back_at = time.monotonic()
            after_first = _status(base)
            served = read_endpoint(NAME, state)
            second = _rollout(same, state)
            after_second = _status(base)
            time.sleep(1)

        # 1. The broken canary rolled back by itself; exit 3 with the decision and figures.
        assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
        assert "rollout: rolled-back (at 50 %: 5xx rate" in first.stdout
        assert "| 50% | new model |" in first.stdout
        last = after_first["rollout"]["last"]
        assert last["decision"] == "rolled-back" and last["baseline"]["total_errors_5xx"] == 0
        assert last["canary"]["total_errors_5xx"] > 0
        # The old model still serves, and answers correctly.
        assert after_first["model"]["version"] == good.version
        assert after_first["rollout"]["active"] is False
        assert served is not None and served.model_name == good.version
        answers_after = [(s, label) for t, s, label in traffic.answers if t > rolled_back_at]
        assert answers_after and all(s == 200 and label == expected for s, label in answers_after)

        # 2. A good model is promoted: exit 0, then it serves.
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "rollout: promoted" in second.stdout
        assert after_second["rollout"]["last"]["decision"] == "promoted"
        assert after_second["rollout"]["last"]["canary"]["total_requests"] > 0
        new_version = after_second["model"]["version"]
        assert new_version not in (good.version, last["version"])
        assert read_endpoint(NAME, state).model_name == new_version  # type: ignore[union-attr]

        # 3. Every request answered; only the broken canary's share was 5xx.
        assert traffic.failures == []
        statuses = traffic.statuses()
        assert set(statuses) <= {200, 500}, statuses
        assert statuses[500] == last["canary"]["total_errors_5xx"]
        assert traffic.statuses(end=started)[500] == 0
        assert traffic.statuses(start=rolled_back_at)[500] == 0
        end = _status(base)["invocations"]
        assert end["rejected"] == before["rejected"] == 0
        assert end["total"] - before["total"] == sum(statuses.values())
        assert statuses[200] > 0

        # The registry: the good copy is live; the broken candidate is kept with its reason.
        document = registry_for(settings).load()
        assert [r.reason for r in document.rolled_back if r.endpoint_name == NAME] == [
            last["reason"]]
        assert registry_for(settings).live(NAME).model_version == new_version  # type: ignore[union-attr]
    finally:
        stop_endpoint(NAME, state)
