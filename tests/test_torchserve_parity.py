"""Parity with the real SageMaker PyTorch serving stack (issue 23, item 7).

The model the local tuner trained (`parity_trial`) is served twice: by the local endpoint
(`dogops.local.endpoint`, the toolkits in Python workers) and by TorchServe 0.12 with
`sagemaker-inference` 1.10.1 and `sagemaker-pytorch-inference` 2.0.25, configured by the toolkit's
own code with the environment the aws backend gives the container (`tests/torchserve_stack.py`).
Every row of the parity battery (`tests/parity_cases.py`: good images, caller mistakes, hostile
bodies) goes to `POST /invocations` on both, the container's route: TorchServe 0.12 answers
`/invocations` for its one model, as SageMaker's PyTorch container relies on. Nothing is mocked.

- Both doors must answer with the same status class, request by request; a 4xx from either
  with no traceback in its body; good images with the same label and probability.
- Every caller's mistake must be a 4xx on the local endpoint, with a one-line reason.

The table of statuses per door is printed at the end of the module (`pytest -s`). TorchServe
needs Java 17: without it on PATH the module is skipped, saying so.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from parity_cases import (
    CASES,
    GOOD,
    LABEL,
    SERVING_ENV,
    Case,
    Request,
    Sources,
    local_endpoint,
    sample_jpeg,
)
from torchserve_stack import java_missing_reason, torchserve

from dogops.settings import Settings

_NO_JAVA = java_missing_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_NO_JAVA is not None, reason=str(_NO_JAVA))]

ENDPOINT = "torchserve-parity-endpoint"
DOORS = ("local", "torchserve")  # the table's columns
BAD = [case for case in CASES if case.name not in GOOD]



def _rows(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.name) for case in cases]


# --------------------------------------------------------------------------------------------
# The two doors


@pytest.fixture(scope="module")
def local_url(parity_trial: dict[str, Any],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state_dir = tmp_path_factory.mktemp("torchserve-parity-state")
    yield from local_endpoint(ENDPOINT, parity_trial, state_dir)


@pytest.fixture(scope="module")
def torchserve_url(parity_trial: dict[str, Any],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from dogops.aws.endpoint import container_environment

    # What CreateModel's Environment carries on aws, plus the same URL allow-list as the
    # local endpoint's workers get.
    env = {**container_environment(Settings()), **SERVING_ENV}
    with torchserve(Path(parity_trial["model"]), tmp_path_factory.mktemp("torchserve"),
                    env) as server:
        yield server.url


def _post(base_url: str, request: Request) -> tuple[int, str]:
    """`POST /invocations` as the container's caller sends it; (status, body)."""
    where = urlsplit(base_url)
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port,
                                            timeout=60)
    try:
        connection.request("POST", "/invocations", body=request.body, headers={
            "Content-Type": request.content_type, "Accept": request.accept})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException) as exc:
        # A dropped connection has no HTTP status: 0 is in no class, so the row fails with why.
        return 0, f"connection failed: {exc!r}"
    finally:
        connection.close()


@dataclass
class Answers:
    """Each row's request sent once per door: row name -> door -> (status, body)."""

    urls: dict[str, str]
    sources: Sources
    rows: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)

    def of(self, case: Case) -> dict[str, tuple[int, str]]:
        if case.name not in self.rows:
            request = case.build(self.sources)
            self.rows[case.name] = {door: _post(url, request) for door, url in self.urls.items()}
        return self.rows[case.name]

    def table(self) -> str:
        lines = [f"{'row':24s} {'local':>6s} {'torchserve':>10s}"]
        for case in CASES:
            if case.name in self.rows:
                local, served = (self.rows[case.name][door][0] for door in DOORS)
                lines.append(f"{case.name:24s} {local:>6d} {served:>10d}")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def answers(parity_trial: dict[str, Any], local_url: str, torchserve_url: str, image_url: str,
            drip_url: str) -> Iterator[Answers]:
    """The module's answers; their table of statuses is printed when the module is done."""
    found = Answers({"local": local_url, "torchserve": torchserve_url},
                    Sources(sample_jpeg(parity_trial), image_url, drip_url))
    yield found
    print("\nstatus per door (POST /invocations)\n" + found.table())


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


# --------------------------------------------------------------------------------------------
# The checks


@pytest.mark.parametrize("case", _rows(CASES))
def test_both_stacks_answer_with_the_same_status_class(case: Case, answers: Answers) -> None:
    got = answers.of(case)
    classes = {door: _status_class(status) for door, (status, _) in got.items()}
    assert classes["local"] == classes["torchserve"], {
        door: (status, text[:300]) for door, (status, text) in got.items()}
    for door, (status, text) in got.items():
        if 400 <= status < 500:  # inference.py's own answer under both toolkits: no insides
            assert "Traceback" not in text, (door, text[:2000])
    if case.name in GOOD:
        for door, (status, text) in got.items():
            assert status == 200, (door, text[:300])
            assert json.loads(text)["label"] == LABEL, (door, text[:300])
        local, served = (json.loads(got[door][1])["probability"] for door in DOORS)
        assert abs(local - served) < 1e-4, (local, served)  # the same model, the same input


@pytest.mark.parametrize("case", _rows(BAD))
def test_a_callers_mistake_is_a_4xx_on_the_local_endpoint(case: Case, answers: Answers) -> None:
    status, text = answers.of(case)["local"]
    assert 400 <= status < 500, (case.name, status, text[:500])
    assert "Traceback" not in text, (case.name, text[:2000])
    assert "\n" not in text.strip(), (case.name, text[:500])  # one line: the reason
