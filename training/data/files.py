"""Atomic file writes that turn a full disk into an error naming the path and the remedy."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class DiskFullError(OSError):
    """Raised when a write fails because the file system has no space left."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place.

    A crash or interrupt leaves either the old file or none, never a truncated one, so a later
    build can trust every file it finds.

    Args:
        path: Final location; its parent folder is created if needed.
        write: Callable that writes the complete content to the temporary path it is given.

    Raises:
        DiskFullError: The file system ran out of space.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                error.errno,
                f"no space left while writing {path}; free space on that disk or pass "
                "--cache/--out on another one, then rerun (finished files are kept)",
            ) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically, with Unix line endings on every platform."""
    atomic_write(path, lambda temporary: temporary.write_bytes(text.encode("utf-8")))
