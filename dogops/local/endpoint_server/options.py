"""Every knob of the endpoint server, as a dataclass and as the command line that carries it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from dogops.local.autoscaler import ScalingPolicy


@dataclass(frozen=True)
class ServerOptions:
    """Every knob of the server; `to_args()` / `parse_args()` make it a command line and back."""

    name: str
    model_dir: str
    code_dir: str
    host: str = "127.0.0.1"
    port: int = 0
    state_file: str | None = None
    model_version: str = ""
    # The scaling knobs, under the settings' names (`ScalingConfig`, which checks them).
    min_capacity: int = 1
    max_capacity: int = 2
    target_invocations_per_instance: float = 50.0
    scale_in_cooldown_s: int = 30
    scale_out_cooldown_s: int = 30
    # SageMaker real-time endpoints accept payloads up to 6 MB.
    max_body_bytes: int = 6 * 1024 * 1024
    # Requests allowed to wait for a worker beyond those being served; more get 503 at once.
    max_queue: int = 16
    # SageMaker gives a container 60 s per invocation.
    invocation_timeout: float = 60.0
    # How long a queued request waits for a free worker before 503.
    queue_timeout: float = 30.0
    # Window over which invocations are counted for the per-minute rate (60 = CloudWatch minute).
    metric_window: float = 60.0
    scaling_interval: float = 1.0
    drain_seconds: float = 2.0
    model_load_timeout: float = 300.0
    # Dynamic batching (dogops.local.endpoint_server.batching): most requests per forward pass,
    # and most milliseconds a request waits for company. 1 turns batching off.
    batch_size: int = 16
    max_batch_delay_ms: float = 5.0
    # Data capture (DataCaptureConfig): share of answered requests written to `capture_dir`,
    # the local store's copy of the capture prefix; 0 is off.
    capture_percent: int = 0
    capture_dir: str | None = None
    # The control channel (control.py): the Unix socket the rollout commands come in on (none:
    # no commands), and the only folder a rollout may load a model from.
    control_socket: str | None = None
    model_store: str | None = None
    # Seconds a keep-alive connection may sit idle (or a read/write stall) before the server
    # closes it; clients with a pool (boto3/urllib3) see the close and open a new connection.
    idle_timeout: float = 60.0

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(**{f.name: getattr(self, f.name) for f in fields(ScalingPolicy)})

    def to_args(self) -> list[str]:
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            args += [f"--{f.name.replace('_', '-')}", str(value)]
        return args


def parse_args(argv: list[str] | None = None) -> ServerOptions:
    parser = argparse.ArgumentParser(
        prog="python -m dogops.local.endpoint_server",
        description="Serve a SageMaker-style inference.py over the container and runtime APIs.",
    )
    casts = {"int": int, "float": float, "str": str, "str | None": str}
    for f in fields(ServerOptions):
        required = f.name in ("name", "model_dir", "code_dir")
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=casts[str(f.type)],
            required=required,
            default=None if required else f.default,
        )
    ns = parser.parse_args(argv)
    options = ServerOptions(**vars(ns))
    try:
        options.policy()  # the scaling knobs' one check (ScalingConfig), before anything starts
    except ValueError as exc:
        parser.error(str(exc))  # exits 2 with the usage, as for any other bad option
    return options


#----------------------------------------------------------------------------------------
# Worker side: load the model code and answer one invocation at a time
