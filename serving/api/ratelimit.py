"""A per-client limit on failed authentication, and the audit rows it saves.

Without it every 401 was an audit row, so anyone who could reach the port could fill the disk
(and, through the fail-closed audit, turn that into an outage; issue 17). Each client address
may fail ``limit`` times per fixed window of ``window_s`` seconds; those failures are answered
401 and audited one by one as before. Later failures in the window are answered 429 with a
``Retry-After`` and are not written one by one: they are counted, and one row per client and
window (``status`` 429, ``repeats`` = how many) is written when the window has passed or the
service stops. A valid token is never refused here: the secrets are 256 random bits, so the
limit protects the disk and the CPU, not the secrets, and an attacker sharing a reviewer's
address cannot lock the reviewer out.

State is per worker process and in memory (each worker enforces its own limit), bounded by
``max_clients`` addresses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Aggregate", "FailureLimiter"]


@dataclass(frozen=True)
class Aggregate:
    """Refusals of one client in one window that share one audit row."""

    client: str
    endpoint: str
    count: int


@dataclass
class _Window:
    started: float
    failures: int = 0
    suppressed: int = 0
    endpoint: str = ""


class FailureLimiter:
    """Counts failed authentications per client address in fixed windows."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Allow ``limit`` failures per client per ``window_s`` seconds."""
        self.limit, self.window_s, self.max_clients = int(limit), float(window_s), max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._done: list[Aggregate] = []  # closed windows with suppressed refusals

    def _window(self, client: str, now: float) -> _Window:
        w = self._windows.get(client)
        if w is not None and now - w.started >= self.window_s:
            self._close(client, w)
            w = None
        if w is None:
            if len(self._windows) >= self.max_clients:
                self._expire(now)
            if len(self._windows) >= self.max_clients:  # all live: drop the oldest
                oldest = next(iter(self._windows))
                self._close(oldest, self._windows[oldest])
            w = self._windows[client] = _Window(now)
        return w

    def _close(self, client: str, w: _Window) -> None:
        del self._windows[client]
        if w.suppressed:
            self._done.append(Aggregate(client, w.endpoint, w.suppressed))

    def _expire(self, now: float) -> None:
        # Windows are inserted when they start and deleted when they close, so the dict is in
        # start order: expire from the front and stop at the first live one. A flood of new
        # addresses costs O(expired) per request, not a scan of all max_clients windows.
        while self._windows:
            client, w = next(iter(self._windows.items()))
            if now - w.started < self.window_s:
                break
            self._close(client, w)

    def over(self, client: str | None) -> bool:
        """True if ``client`` has used up its failures in the current window."""
        with self._lock:
            return self._window(client or "?", self._clock()).failures >= self.limit

    def failed(self, client: str | None) -> bool:
        """Count one failure; True if it is within the allowance (audit it, answer 401)."""
        with self._lock:
            w = self._window(client or "?", self._clock())
            if w.failures >= self.limit:
                return False
            w.failures += 1
            return True

    def suppress(self, client: str | None, endpoint: str) -> None:
        """Count one refusal answered 429 and not audited on its own."""
        with self._lock:
            w = self._window(client or "?", self._clock())
            w.suppressed += 1
            w.endpoint = w.endpoint or endpoint

    def retry_after(self, client: str | None) -> int:
        """Whole seconds until ``client``'s window ends."""
        with self._lock:
            w = self._window(client or "?", self._clock())
            return max(1, int(w.started + self.window_s - self._clock() + 0.999))

    def due(self) -> list[Aggregate]:
        """The aggregates of windows that have ended (each returned once)."""
        with self._lock:
            self._expire(self._clock())
            done, self._done = self._done, []
        return done

    def drain(self) -> list[Aggregate]:
        """Every pending aggregate, open windows included (at shutdown)."""
        with self._lock:
            for client, w in list(self._windows.items()):
                self._close(client, w)
            done, self._done = self._done, []
        return done
