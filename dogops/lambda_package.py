"""The Lambda deployment package: a deterministic zip of `dogops/lambda_handler/handler.py`.

Same source, same bytes: entries are sorted, timestamps fixed at 1980-01-01 (the zip epoch),
permissions fixed at 0644, compression fixed (deflate, level 9), no directory entries or extra
fields. So the package's SHA-256 identifies the handler source, and a deploy step can compare
`code_sha256_b64` with the function's `CodeSha256` to skip re-uploading an unchanged handler.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

HANDLER_DIR = Path(__file__).resolve().parent / "lambda_handler"
HANDLER_FILES = ("handler.py",)
HANDLER = "handler.lambda_handler"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644  # regular file, rw-r--r--


@dataclass(frozen=True)
class LambdaPackage:
    zip_bytes: bytes
    sha256: str
    """Hex SHA-256 of the zip."""
    code_sha256_b64: str
    """Base64 SHA-256 of the zip: what Lambda reports as `CodeSha256`."""
    size_bytes: int
    handler: str = HANDLER
    files: tuple[str, ...] = HANDLER_FILES


def build_package(source_dir: Path = HANDLER_DIR) -> LambdaPackage:
    """Zip the handler source deterministically (see the module docstring)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(HANDLER_FILES):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = _FILE_MODE << 16
            info.create_system = 3  # Unix, so the mode above is honoured on every build host
            info.compress_type = zipfile.ZIP_DEFLATED
            data = (Path(source_dir) / name).read_bytes()
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    zip_bytes = buffer.getvalue()
    digest = hashlib.sha256(zip_bytes).digest()
    return LambdaPackage(
        zip_bytes=zip_bytes,
        sha256=digest.hex(),
        code_sha256_b64=base64.b64encode(digest).decode(),
        size_bytes=len(zip_bytes),
    )


def write_package(path: Path) -> LambdaPackage:
    """Build the package and write it to `path` (atomically; untouched when already identical)."""
    package = build_package()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.read_bytes() == package.zip_bytes):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(package.zip_bytes)
        os.replace(tmp, path)
    return package
