"""Write a whole output directory or file, or nothing.

Stages write into a temporary sibling and move it into place only when the
output is complete, so a crash or Ctrl-C never leaves a half-written stage and
the previous good output stays until the new one is ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "check_writable"]


def check_writable(directory: Path) -> None:
    """Raise PermissionError with a clear message if ``directory`` cannot be created or written."""
    directory = Path(directory)
    probe_root = directory
    while not probe_root.exists():
        probe_root = probe_root.parent
    if not probe_root.is_dir():
        raise PermissionError(f"cannot create a directory under {probe_root}: it is a file")
    if not os.access(probe_root, os.W_OK | os.X_OK):
        raise PermissionError(f"directory is not writable: {probe_root}")


@contextlib.contextmanager
def atomic_dir(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` when the block succeeds.

    Args:
        target: the final directory.
        replace: when False and ``target`` exists, raise FileExistsError before any work.
    """
    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap: move the old output aside first so the rename of the new one is atomic.
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the same directory that is renamed to ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
