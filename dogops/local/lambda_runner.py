"""Run the Lambda package locally, like the console's Test button.

The SAME zip that the aws backend uploads is unpacked into a temporary directory and its handler
runs in a separate Python process, with only what Lambda would give it: the package directory on
`sys.path`, `ENDPOINT_NAME` and `SAGEMAKER_RUNTIME_ENDPOINT_URL` pointing at the local endpoint,
and dummy AWS credentials and region (the caller's real credentials are never passed on). The event
goes in on stdin, the response comes back on stdout; the handler's own prints go to stderr.

A handler that raises, or runs past `timeout_s`, gives Lambda's error payload
(`errorType`, `errorMessage`) rather than an exception, as the console shows it. Only a runner that
cannot start or answer raises `OperationFailedError`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dogops.errors import OperationFailedError, UserInputError
from dogops.lambda_package import LambdaPackage, build_package
from dogops.results import EndpointInfo

FUNCTION_NAME = "dogops-predict-local"

# Runs in the child: import the handler from the unpacked package and call it once.
_RUNNER = r"""
import json, os, sys, time, traceback, uuid
package_dir, handler_spec, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
sys.path.insert(0, package_dir)
out, sys.stdout = sys.stdout, sys.stderr  # the handler's prints are logs, not the response

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    aws_request_id = str(uuid.uuid4())
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + function_name
    log_group_name = "/aws/lambda/" + function_name
    log_stream_name = "local"
    _deadline = time.monotonic() + timeout_s
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

try:
    module_name, function_name = handler_spec.rsplit(".", 1)
    handler = getattr(__import__(module_name), function_name)
    event = json.loads(sys.stdin.read())
    result = handler(event, Context())
except Exception as exc:
    traceback.print_exc()
    result = {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }
out.write(json.dumps(result))
out.flush()
"""

# Passed through from the caller's environment; everything else (AWS_*, proxies, ...) is not.
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def invoke_local_lambda(
    event: dict[str, Any],
    endpoint: EndpointInfo,
    package: LambdaPackage | None = None,
    timeout_s: float = 60,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Invoke the packaged handler once against `endpoint` and return its response."""
    if not endpoint.runtime_endpoint_url:
        raise UserInputError(
            f"Endpoint {endpoint.name} has no runtime_endpoint_url: the local Lambda needs a "
            "local endpoint (start one with the local backend's deploy)."
        )
    try:
        event_json = json.dumps(event)
    except (TypeError, ValueError):
        raise UserInputError("The event must be a JSON-serialisable object.") from None
    package = package or build_package()
    with tempfile.TemporaryDirectory(prefix="dogops-lambda-") as tmp:
        task_dir = Path(tmp) / "task"  # Lambda's /var/task
        with zipfile.ZipFile(io.BytesIO(package.zip_bytes)) as archive:
            archive.extractall(task_dir)
        runner = Path(tmp) / "runner.py"
        runner.write_text(_RUNNER)
        child_env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
        child_env.update(
            {
                "AWS_ACCESS_KEY_ID": "dogops-local",
                "AWS_SECRET_ACCESS_KEY": "dogops-local",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                # No profile or config file of the caller's may leak in.
                "AWS_CONFIG_FILE": str(Path(tmp) / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(Path(tmp) / "aws-credentials"),
                "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
                "LAMBDA_TASK_ROOT": str(task_dir),
                "ENDPOINT_NAME": endpoint.name,
                "SAGEMAKER_RUNTIME_ENDPOINT_URL": endpoint.runtime_endpoint_url,
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
        )
        # -I: isolated mode, like Lambda's runtime: no PYTHON* variables, no user site-packages.
        command = [
            sys.executable, "-I", str(runner), str(task_dir), package.handler, str(timeout_s)
        ]
        try:
            completed = subprocess.run(
                command,
                input=event_json.encode(),
                capture_output=True,
                env=child_env,
                cwd=task_dir,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Task timed out after {timeout_s:.2f} seconds",
            }
    stderr_tail = completed.stderr.decode(errors="replace")[-2000:]
    try:
        response = json.loads(completed.stdout)
    except ValueError:
        raise OperationFailedError(
            f"The local Lambda runner exited with code {completed.returncode} without a "
            f"response. Its output:\n{stderr_tail}"
        ) from None
    if not isinstance(response, dict):
        raise OperationFailedError(f"The handler returned {type(response).__name__}, not a dict.")
    return response
