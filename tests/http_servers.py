"""A real HTTP server on 127.0.0.1 for tests that fetch image URLs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 for the length of the block; yields its base URL.

    On exit it waits for every request thread, so none outlives its test. One that does (a slow
    image server still writing to a client that gave up) prints a traceback from its thread, and
    on CPython 3.11 that traceback's `ast.parse` can race a test's own and fail it with
    "AST constructor recursion depth mismatch" (python/cpython#106905).
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False  # server_close() joins the request threads
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send_image(handler: BaseHTTPRequestHandler, body: bytes, content_type: str) -> None:
    """Answer `handler`'s request with 200 and the whole image."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
