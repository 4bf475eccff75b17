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
