"""Fetch an image URL for `inference.py`, without becoming a server-side request forgery tool.

Stdlib only (boto3 for `s3://`, when present). Settings come from the environment, read per call:
`DOGOPS_ALLOWED_URL_SCHEMES` (default `https,s3`), `DOGOPS_ALLOWED_URL_HOSTS` (default: any host
whose every address is globally routable; listed hosts skip that check), `DOGOPS_ALLOWED_S3_BUCKETS`
(default none: the backends set the project's bucket) and `DOGOPS_URL_TIMEOUT_S` (default 5), one
deadline for the whole fetch, DNS included. Every refusal is a `FetchError` with an HTTP status.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

_CHUNK = 64 * 1024


class FetchError(ValueError):
    """The caller's URL cannot be fetched; `status_code` is the HTTP status to answer."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def url_timeout_s() -> float:
    raw = os.environ.get("DOGOPS_URL_TIMEOUT_S", "").strip()
    return float(raw) if raw else 5.0


def _env_set(name: str, default: str) -> set[str]:
    raw = os.environ.get(name, default)
    return {item.strip().lower() for item in raw.split(",") if item.strip()}


def allowed_schemes() -> set[str]:
    return _env_set("DOGOPS_ALLOWED_URL_SCHEMES", "https,s3")


def allowed_s3_buckets() -> set[str]:
    """Buckets `s3://` URLs may name; none unless set (the backends set the project's bucket)."""
    return _env_set("DOGOPS_ALLOWED_S3_BUCKETS", "")


def allowed_hosts() -> set[str]:
    """Explicitly allowed hosts; an entry starting with "." also allows its sub-domains."""
    return _env_set("DOGOPS_ALLOWED_URL_HOSTS", "")


def _host_allowed(host: str, hosts: set[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h or (h.startswith(".") and host.endswith(h)) for h in hosts)


# IPv6 prefixes whose addresses carry an IPv4 address that a gateway (NAT64, 6to4, Teredo, an
# old dual stack) may deliver to: each is checked like the IPv4 address itself. (prefix, shift)
# where the IPv4 address is `(int(address) >> shift) & 0xFFFFFFFF`.
_EMBEDDING = (
    (ipaddress.IPv6Network("64:ff9b::/96"), 0),  # NAT64 well-known prefix (RFC 6052)
    (ipaddress.IPv6Network("::ffff:0:0/96"), 0),  # IPv4-mapped
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), 0),  # IPv4-translated (RFC 2765 SIIT)
    (ipaddress.IPv6Network("::/96"), 0),  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
    (ipaddress.IPv6Network("2002::/16"), 80),  # 6to4 (RFC 3056)
)
# Refused whatever they embed: NAT64 local-use prefixes are the operator's own translators, and
# where their IPv4 bits sit depends on the prefix length each network picked (RFC 8215).
_NEVER = (ipaddress.IPv6Network("64:ff9b:1::/48"),)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address `ip` embeds in a form some gateway would route to."""
    value = int(ip)
    found = [ipaddress.IPv4Address((value >> shift) & 0xFFFFFFFF)
             for net, shift in _EMBEDDING if ip in net]
    if ip.teredo:  # 2001::/32: the Teredo server and the (obfuscated) client address
        found += list(ip.teredo)
    # ISATAP (RFC 5214): any prefix, interface identifier [02]00:5efe:a.b.c.d.
    if (value >> 32) & 0xFCFFFFFF == 0x00005EFE:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def _is_public(address: str) -> bool:
    """Globally routable only: refuses private, shared (100.64/10), loopback, link-local,
    multicast, reserved, and every IPv6 form that embeds a refused IPv4 address (NAT64,
    IPv4-mapped / -translated / -compatible, 6to4, Teredo, ISATAP)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NEVER):
            return False
        if not all(_is_public(str(v4)) for v4 in _embedded_ipv4(ip)):
            return False
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, str, int, str | None]:
    """Check scheme and host against the allow-lists and resolve the host once.

    Returns (scheme, host, port, address to connect to; None for s3). Raises FetchError.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"malformed URL {url!r}: {exc}") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    schemes = allowed_schemes()
    if scheme not in schemes:
        raise FetchError(
            f"URL scheme {scheme or '(none)'!r} is not allowed: use one of "
            f"{', '.join(sorted(schemes))} (DOGOPS_ALLOWED_URL_SCHEMES).")
    if not host:
        raise FetchError(f"URL {url!r} has no host.")
    hosts = allowed_hosts()
    listed = _host_allowed(host, hosts)
    if hosts and not listed:
        raise FetchError(
            f"host {host!r} is not in the allowed hosts (DOGOPS_ALLOWED_URL_HOSTS).")
    if scheme == "s3":
        if host not in allowed_s3_buckets():
            raise FetchError(f"bucket {host!r} is not in the allowed buckets "
                               "(DOGOPS_ALLOWED_S3_BUCKETS).")
        return scheme, host, 0, None
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not listed:
        private = [a for a in addresses if not _is_public(a)]
        if private:
            raise FetchError(
                f"host {host!r} resolves to {private[0]}, a private, loopback, link-local or "
                f"otherwise not globally routable address: refused. List the host in "
                f"DOGOPS_ALLOWED_URL_HOSTS to allow it.")
    return scheme, host, port, addresses[0]


def _connection(scheme: str, host: str, port: int, address: str,
                timeout: float) -> http.client.HTTPConnection:
    """A connection to the already-checked `address` that still sends `host` (Host, TLS SNI and
    certificate checks), so a second DNS answer cannot point it elsewhere."""
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def create_connection(addr: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        return socket.create_connection((address, addr[1]), *args, **kwargs)

    conn._create_connection = create_connection  # type: ignore[attr-defined]
    return conn


def _read_limited(read: Any, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError("image download timed out (DOGOPS_URL_TIMEOUT_S).")
        chunk = read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise FetchError(
                f"image at the URL is over the {limit}-byte limit (DOGOPS_MAX_IMAGE_BYTES).", 413)
        chunks.append(chunk)


def fetch_http(url: str, scheme: str, host: str, port: int, address: str, limit: int,
               opened: list[Any] | None = None) -> bytes:
    """GET one URL; redirects are refused rather than followed (they could lead anywhere).
    The connection is appended to `opened` so that `fetch_url` can abort it at its deadline."""
    timeout = url_timeout_s()
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _connection(scheme, host, port, address, timeout)
    if opened is not None:
        opened.append(conn)
    try:
        conn.request("GET", target, headers={"Accept": "image/*", "User-Agent": "dogops/1"})
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise FetchError(
                f"URL {url} redirects (HTTP {response.status}) and redirects are not followed: "
                f"send the final image URL.")
        if response.status != 200:
            raise FetchError(f"URL {url} answered HTTP {response.status}, not an image.")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise FetchError(
                f"image at {url} is {length} bytes, over the {limit}-byte limit "
                f"(DOGOPS_MAX_IMAGE_BYTES).", 413)
        return _read_limited(response.read, limit, deadline)
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def fetch_s3(url: str, limit: int) -> bytes:
    """Read an `s3://bucket/key` object with boto3 (honours AWS_ENDPOINT_URL), size-bounded."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise FetchError("s3:// URLs need boto3, which this server lacks: use https.") from exc
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not key:
        raise FetchError(f"S3 URL {url} has no object key.")
    timeout = url_timeout_s()
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"max_attempts": 1})
    try:
        obj = boto3.client("s3", config=config).get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength", 0)) > limit:
            raise FetchError(
                f"S3 object {url} is {obj['ContentLength']} bytes, over the {limit}-byte limit "
                f"(DOGOPS_MAX_IMAGE_BYTES).", 413)
        return _read_limited(obj["Body"].read, limit, time.monotonic() + timeout)
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore errors: missing object, access denied
        raise FetchError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc


def _fetch(url: str, limit: int, opened: list[Any]) -> bytes:
    scheme, host, port, address = check_url(url)
    if scheme == "s3":
        return fetch_s3(url, limit)
    assert address is not None
    return fetch_http(url, scheme, host, port, address, limit, opened)


def fetch_url(url: Any, limit: int) -> bytes:
    """The bytes at an allowed URL, within the size limit and ONE deadline for all of it.

    Socket timeouts bound each step, not the sum: a server dripping a byte every half second,
    or a slow DNS answer, would hold the worker far longer. So the fetch runs in a helper thread
    and is abandoned (its socket shut down) when `DOGOPS_URL_TIMEOUT_S` is up."""
    if not isinstance(url, str) or not url.strip():
        raise FetchError('"url" must be a non-empty string.')
    url, timeout = url.strip(), url_timeout_s()
    opened: list[Any] = []
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["data"] = _fetch(url, limit, opened)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="dogops-url-fetch", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for conn in opened:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        raise FetchError(f"fetching {url} took longer than {timeout:g} s "
                         "(DOGOPS_URL_TIMEOUT_S): image download timed out.")
    if "error" in outcome:
        raise outcome["error"]
    return bytes(outcome["data"])
