"""The failed-authentication limiter (serving/api/ratelimit.py), on a hand-driven clock."""

from __future__ import annotations

from serving.api.ratelimit import Aggregate, FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_over_the_limit_are_suppressed_and_aggregated_per_window() -> None:
    """Three failures pass, the rest of the window is refused and counted in one aggregate."""
    clock = Clock()
    limiter = FailureLimiter(3, 60, clock=clock)
    assert [limiter.failed("a") for _ in range(5)] == [True, True, True, False, False]
    for _ in range(2):
        limiter.suppress("a", "/score_case")
    assert limiter.over("a") and not limiter.over("b")  # per client
    assert limiter.retry_after("a") == 60
    assert limiter.due() == []  # the window is still open
    clock.now = 61
    assert limiter.due() == [Aggregate("a", "/score_case", 2)]
    assert limiter.due() == []  # once
    assert limiter.failed("a") and not limiter.over("a")  # a new window


def test_drain_closes_open_windows_and_clients_are_bounded() -> None:
    """At shutdown every pending count is returned; the client table never exceeds its bound."""
    clock = Clock()
    limiter = FailureLimiter(1, 60, max_clients=10, clock=clock)
    for i in range(50):
        limiter.failed(f"c{i}")
        limiter.suppress(f"c{i}", "/ui/login")
    assert len(limiter._windows) <= 10
    drained = limiter.drain()
    assert sum(a.count for a in drained) == 50 and limiter.drain() == []


class FullScan(FailureLimiter):
    """The oracle: expire by scanning every window, drop the oldest by its start time."""

    def _expire(self, now: float) -> None:
        for client, w in list(self._windows.items()):
            if now - w.started >= self.window_s:
                self._close(client, w)

    def _window(self, client: str, now: float):  # type: ignore[no-untyped-def]
        if client not in self._windows and len(self._windows) >= self.max_clients:
            self._expire(now)
            if len(self._windows) >= self.max_clients:
                oldest = min(self._windows, key=lambda c: self._windows[c].started)
                self._close(oldest, self._windows[oldest])
        return super()._window(client, now)


def test_expiry_from_the_front_matches_a_full_scan() -> None:
    """Windows opened at staggered times and restarted out of order, on a table that fills:
    the limiter's aggregates and open windows equal those of the full-scan oracle."""
    clock = Clock()
    fast = FailureLimiter(1, 60, max_clients=20, clock=clock)
    slow = FullScan(1, 60, max_clients=20, clock=clock)
    for step in range(400):
        clock.now = step * 0.7
        client = f"c{(step * 37) % 53}"  # revisits clients, so windows restart in a new order
        for limiter in (fast, slow):
            limiter.failed(client)
            limiter.suppress(client, "/score_case")
        if step % 25 == 0:
            assert fast.due() == slow.due()
            assert list(fast._windows) == list(slow._windows)
    clock.now += 30
    assert fast.due() == slow.due() and fast.drain() == slow.drain()
