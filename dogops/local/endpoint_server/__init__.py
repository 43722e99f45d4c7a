"""The local endpoint: an HTTP server hosting a SageMaker-style `inference.py` in worker processes.

It speaks two protocols on one port, so code written against SageMaker runs unchanged:

- the container contract: `GET /ping` (200 once a worker has loaded the model), `POST /invocations`;
- the runtime API: `POST /endpoints/{name}/invocations` with `Content-Type` / `Accept` headers, so
  `boto3.client("sagemaker-runtime", endpoint_url="http://host:port").invoke_endpoint(...)` works.
  Errors use the rest-json shape botocore parses (`x-amzn-ErrorType` header, `{"message": ...}`
  body), with SageMaker's codes: `ValidationError` (400, e.g. unknown endpoint name; 413 for an
  oversized body), `ModelError` (424, the model code failed; `OriginalStatusCode` and
  `OriginalMessage` carry its own status and message, as on AWS), `ServiceUnavailable` (503, every
  worker busy and the queue full) and `InternalFailure` (500).

Model code runs in `spawn`ed worker processes, each of which serves `code_dir/inference.py` through
SageMaker's own serving toolkits (`dogops.local.serving_toolkit`: `sagemaker-pytorch-inference`'s
`HandlerService` and `sagemaker-inference`'s `Transformer`, the Python side of the PyTorch inference
container), so content types, Accept defaults, default handlers and error statuses are the
container's. A 5xx body (the toolkit's traceback) goes to the log; the caller gets one line. The
front process (stdlib `ThreadingHTTPServer`) hands each
request to an idle worker over a pipe, bounds the number of requests in flight, and runs a
target-tracking autoscaler (`dogops.local.autoscaler`) that keeps between min and max workers.
`GET /dogops/status` shows workers, invocations, rates and scaling events (read-only). The rollout
commands never come in on this port: only on the server's private control socket (`control`).
Idle keep-alive connections close after `--idle-timeout` seconds.

Run: `python -m dogops.local.endpoint_server --name NAME --model-dir DIR --code-dir DIR ...`
(`dogops.local.endpoint.start_endpoint` does this, detached). SIGTERM drains: the server keeps
answering for `--drain-seconds` (with `Connection: close`), then stops accepting, lets in-flight
requests finish and stops its workers.

The front imports the stdlib and dogops's plain modules (the autoscaler, the settings' scaling
check, data capture), never torch; workers import the toolkits.

Modules: `options` (every knob, as a command line and back), `worker` (the worker process: load
the model code, answer invocations), `pool` (the front's worker pool), `state` (counters, scaling
and the status document), `handler` (HTTP routing, invocations, AWS-shaped errors), `control`
(the rollout commands' Unix socket and its client), `serving` (the process: start, wait for the
model, scale, drain).
"""

from dogops.local.endpoint_server.options import ServerOptions, parse_args
from dogops.local.endpoint_server.serving import EXIT_MODEL_LOAD_FAILED, main, serve

__all__ = ["EXIT_MODEL_LOAD_FAILED", "ServerOptions", "main", "parse_args", "serve"]
