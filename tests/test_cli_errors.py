"""Bad values on the command line end as one `error:` line naming the value and exit 2, never
a traceback: pydantic's refusals (an endpoint name, a backend) as well as dogops's own errors.
The real `dogops` app through typer's CliRunner; none of these cases gets as far as a flow."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dogops_cli.cli import app


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["run", "--endpoint-name", "../x"], "name: String should match pattern"),
        (["run", "--backend", "nope"], "backend: Input should be 'local' or 'aws' (got 'nope')"),
        (["registry", "--backend", "nope"], "(got 'nope')"),
        (["rollback", "--endpoint-name", "a_b"], "(got 'a_b')"),
    ],
    ids=["endpoint-name", "backend-run", "backend-registry", "endpoint-rollback"],
)
def test_a_bad_value_is_one_line_naming_it(args: list[str], named: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer's exit, not an escaped error
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and named in lines[-1], result.output
