"""Bounds on hostile clients that every protocol shares, with no I/O: the caller passes the time.

- `ClientSlots`: open connections per client host of one listener (max_connections_per_client).
- `RateGuard`: a request under way must keep arriving at min_data_rate (slowloris resets the
  idle timer with every byte, so the idle timeout alone never ends it).
- `AuthFailures`: failed logins per client host across every listener of a server, so that a
  password guesser is slowed down however it spreads its guesses over connections.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable

# How long a failed login counts against its client host.
AUTH_FAILURE_WINDOW = 600.0
# Failures remembered per host: enough for any threshold worth configuring, and a bound on memory.
_REMEMBERED_FAILURES = 4096
_REMEMBERED_HOSTS = 10000  # past this many hosts, the expired ones are swept out


class ClientSlots:
    """Open connections per client host (one listener's)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, host: str, limit: int) -> bool:
        """Count one more connection from `host`; False (and nothing counted) over the limit."""
        if self._open[host] >= limit:
            return False
        self._open[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


class RateGuard:
    """Whether a client that has started a request (bytes arrived since the server last answered)
    sends at least `min_rate` bytes a second, measured over consecutive windows of `window`
    seconds from the request's first byte."""

    __slots__ = ("min_rate", "window", "window_started", "received_in_window")

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self.window_started: float | None = None  # None: no request under way
        self.received_in_window = 0

    def received(self, now: float, count: int) -> None:
        if self.window_started is None:
            self.window_started, self.received_in_window = now, 0
        self.received_in_window += count

    def answered(self) -> None:
        """The server replied: the client is not in the middle of anything it has to finish."""
        self.window_started = None

    def check_at(self) -> float | None:
        """When the current window ends (the time to call `too_slow`), or None."""
        return None if self.window_started is None else self.window_started + self.window

    def too_slow(self, now: float) -> bool:
        """At or after the end of a window: True when the client sent too little in it;
        otherwise the next window starts now."""
        end = self.check_at()
        if end is None or now < end:
            return False
        if self.received_in_window < self.min_rate * self.window:
            return True
        self.window_started, self.received_in_window = now, 0
        return False


class AuthFailures:
    """Failed logins per client host over the last AUTH_FAILURE_WINDOW seconds. One per server,
    shared by its listeners; each listener's limits say how many are too many."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def failed(self, host: str) -> None:
        now = self._clock()
        if len(self._failures) >= _REMEMBERED_HOSTS:
            for stale in list(self._failures):
                self._recent(stale, now)
        self._failures.setdefault(host, deque(maxlen=_REMEMBERED_FAILURES)).append(now)

    def count(self, host: str) -> int:
        return len(self._recent(host, self._clock()))

    def delay(self, host: str, threshold: int, delay: float) -> float:
        """How long to wait before answering a login from `host`: `delay` once it has `threshold`
        recent failures, success or failure alike (an answer that comes at once would tell a
        guesser which guess was right), else nothing."""
        return delay if self.count(host) >= threshold else 0.0

    def _recent(self, host: str, now: float) -> deque[float]:
        times = self._failures.get(host)
        if times is None:
            return deque()
        cutoff = now - AUTH_FAILURE_WINDOW
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[host]
        return times
