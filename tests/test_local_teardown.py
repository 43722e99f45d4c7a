"""The local teardown deletes only what dogops made and recorded, whatever state dir it is given
(a teardown from the UI may name any folder): foreign folders, files and links under
`<state_dir>/lambda` and foreign records under `<state_dir>/endpoints` are left alone.

Real folders and the real `deploy_lambda` (it packages the handler); nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dogops.backends import get_backend
from dogops.local.teardown import teardown_local
from dogops.results import EndpointInfo, SecurityReport
from dogops.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "home")


def deploy_lambda(settings: Settings, name: str = "dogops-predict") -> Path:
    configured = settings.model_copy(update={"lambda_": settings.lambda_.model_copy(
        update={"function_name": name})})
    get_backend(configured).deploy_lambda(EndpointInfo(name="ep", url="http://x"),
                                          SecurityReport())
    return settings.state_dir / "lambda" / name


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_teardown_removes_the_lambda_package_it_made(settings: Settings) -> None:
    folder = deploy_lambda(settings)
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".zip"]
    assert teardown_local(settings, apply=False) == ["lambda-package:dogops-predict"]
    assert folder.exists()  # a dry run deletes nothing
    assert teardown_local(settings, apply=True) == ["lambda-package:dogops-predict"]
    assert not folder.exists() and teardown_local(settings, apply=True) == []


def test_teardown_leaves_what_others_put_under_the_state_dir(
    settings: Settings, tmp_path: Path
) -> None:
    ours = deploy_lambda(settings)
    lambda_root = settings.state_dir / "lambda"
    (lambda_root / "my-project").mkdir()
    (lambda_root / "my-project" / "handler.py").write_text("someone else's")
    (lambda_root / "fake").mkdir()
    (lambda_root / "fake" / "function.json").write_text("{}")  # not a dogops record
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    record = json.loads((ours / "function.json").read_text())
    (elsewhere / "function.json").write_text(json.dumps({**record, "function_name": "linked"}))
    (elsewhere / "0123456789abcdef.zip").write_bytes(b"precious")
    (lambda_root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (ours / "notes.txt").write_text("added by a person")
    endpoints = settings.state_dir / "endpoints"
    endpoints.mkdir()
    (endpoints / "config.json").write_text(json.dumps({"theirs": True}))
    before = files_under(tmp_path)

    assert teardown_local(settings, apply=True) == ["lambda-package:dogops-predict"]

    left = set(before) - set(files_under(tmp_path))
    assert all(path.startswith("home/lambda/dogops-predict/") for path in left), left
    assert (ours / "notes.txt").exists() and not list(ours.glob("*.zip"))
    assert not (ours / "function.json").exists()
    assert (elsewhere / "0123456789abcdef.zip").read_bytes() == b"precious"
    assert (endpoints / "config.json").exists()
