"""One run cache: files derived from a scoring run, built once, swapped in, memory-mapped.

The service's workers start together and each needs the same derived files of the latest
run (the lookup's Arrow tables, the SHAP matrix as ``.npy``, the reviewer pages' files).
A :class:`RunCache` keeps them at ``<root>/<run_id>/``:

- the first process to ask takes an exclusive ``flock`` on ``<root>/.lock``, builds the
  entry in a temporary sibling and swaps it in with :func:`triage.atomic.atomic_dir`; the
  others wait on the lock, then find the entry current and only map it;
- ``stamp.json``, written inside the entry before the swap, holds the fingerprint of the
  inputs (see :func:`file_stamp`); an entry whose stamp differs is rebuilt;
- entries of other runs are removed (files already mapped stay valid until unmapped: on
  POSIX an unlinked file lives on while it is open).

The caller reads its files with :func:`map_arrow` / :func:`map_npy` (zero-copy, shared
through the page cache). An ``OSError`` (read-only or full disk) reaches the caller, which
then keeps the data in its own memory instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from triage.atomic import atomic_dir

__all__ = ["STAMP_FILE", "RunCache", "file_stamp", "map_arrow", "map_npy", "write_arrow"]

STAMP_FILE = "stamp.json"


def file_stamp(path: Path) -> str:
    """A cheap fingerprint of an input file: its path, size and modification time (ns).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    st = Path(path).stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def write_arrow(table: pa.Table, target: Path) -> None:
    """Write ``table`` as one Arrow IPC record batch (one chunk: ``take`` stays cheap)."""
    with pa.OSFile(str(target), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=len(table) or None)


def map_arrow(path: Path) -> pa.Table:
    """The Arrow IPC file at ``path``, memory-mapped (no copy)."""
    return ipc.open_file(pa.memory_map(str(path))).read_all()


def map_npy(path: Path) -> np.ndarray:
    """The ``.npy`` file at ``path``, memory-mapped read-only."""
    return np.load(path, mmap_mode="r")


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


class RunCache:
    """Per-run cache entries under one root directory (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, run_id: str) -> Path:
        """The directory of ``run_id``'s entry (it may not exist yet)."""
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.root / run_id

    def get(self, run_id: str, stamp: Mapping[str, str], build: Callable[[Path], None]) -> Path:
        """The entry of ``run_id``, built first by ``build(directory)`` if missing or stale.

        Args:
            run_id: the scoring run the entry derives from.
            stamp: fingerprint of the inputs (JSON-able strings); a different stamp rebuilds.
            build: writes the entry's files into the (empty, existing) directory it is given.

        Returns:
            The entry's directory, complete and current.

        Raises:
            OSError: the cache cannot be written.
        """
        target = self.entry(run_id)
        self.root.mkdir(parents=True, exist_ok=True)
        want = dict(stamp)
        with _locked(self.root / ".lock"):
            if not _current(target, want):
                self._sweep(keep=None)  # leftovers of a builder killed mid-way
                with atomic_dir(target) as tmp:
                    build(tmp)
                    (tmp / STAMP_FILE).write_text(json.dumps(want, indent=2))
            self._sweep(keep=run_id)
        return target

    def _sweep(self, keep: str | None) -> None:
        """Remove temporary leftovers and, when ``keep`` is given, other runs' entries."""
        for old in self.root.iterdir():
            if not old.is_dir() or old.name == keep:
                continue
            if old.name.startswith(".") or keep is not None:
                with contextlib.suppress(OSError):
                    shutil.rmtree(old)


def _current(target: Path, stamp: dict[str, str]) -> bool:
    try:
        return json.loads((target / STAMP_FILE).read_text()) == stamp
    except (OSError, ValueError):
        return False
