"""Retrying LLM calls: classify provider errors, back off, pause through long outages.

The SDKs' own retries are switched off (max_retries=0) so the policy lives here, in one
place, and is testable. `classify` turns any exception an SDK call can raise into a
`harness.errors.ProviderError` with `retryable` and `retry_after` set:

    retryable      408, 409, 425, 429, 5xx but 501, 529 (overloaded), timeouts, connection
                   errors, malformed or empty responses
    not retryable  400, 401, 403, 404, 413, 422 and other 4xx (bad key, unknown model,
                   prompt too long), 501 (the server does not implement the call): backing
                   off cannot help, so the night stops with one line saying which

`call_with_retries` runs a call under a `RetryPolicy` through tenacity: exponential backoff
with jitter, never shorter than the server's `retry-after`. Retryable failures are retried
without a bound by default, so a night survives a provider outage: after `pause_after` seconds
of continuous failure the `ProviderStatus` says "paused" (the live view shows it) and the loop
simply waits, probing every `cap` seconds, until the provider answers again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import tenacity

from harness.errors import ProviderError

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 529})
_MAX_RETRY_AFTER = 3600.0  # a server asking for more than an hour is treated as an outage


@dataclass
class RetryPolicy:
    """How to back off. The defaults are those of `Settings.retry_*`, which tests shorten so they sleep little."""

    base: float = 2.0  # first delay in seconds; doubles per attempt
    cap: float = 300.0  # longest single delay (also the probe interval during an outage)
    jitter: float = 0.25  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    pause_after: float = 180.0  # seconds of continuous failure before the status says "paused"
    max_attempts: int | None = None  # None: retry retryable errors forever
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        # The exponent is bounded: 2.0**1024 overflows, and an outage may last that many retries.
        backoff = min(self.cap, self.base * (2.0 ** min(attempt, 64)))
        backoff *= 1.0 + self.jitter * (2.0 * random.random() - 1.0)
        if retry_after is not None:
            # Honour the server, plus a little jitter so parallel workers do not stampede.
            return max(backoff, retry_after * (1.0 + self.jitter * random.random() / 4))
        return max(0.0, backoff)


@dataclass
class ProviderStatus:
    """What the provider connection is doing, for the live view. Thread-safe."""

    state: str = "ok"  # "ok" | "retrying" | "paused"
    message: str = ""
    since: float | None = None  # when the current failure streak began (time.time())
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, message: str = "") -> None:
        with self._lock:
            if state == "ok":
                self.since, self.failures = None, 0
            elif self.since is None:
                self.since = time.time()
            if state != "ok":
                self.failures += 1
            self.state, self.message = state, message

    def line(self) -> str:
        """One line for the live view, '' when all is well."""
        with self._lock:
            if self.state == "ok":
                return ""
            since = time.strftime("%H:%M:%S", time.localtime(self.since)) if self.since else "?"
            word = "PAUSED (provider outage)" if self.state == "paused" else "retrying"
            return f"LLM {word} since {since}, {self.failures} failed calls: {self.message}"


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - headers of a malformed response: treat as absent
        return None
    return str(value) if value is not None else None


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait: `retry-after-ms`, `retry-after` as seconds or HTTP date."""
    if headers is None:
        return None
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms:
        try:
            return min(_MAX_RETRY_AFTER, max(0.0, float(raw_ms) / 1000.0))
        except ValueError:
            pass
    raw = _header(headers, "retry-after")
    if not raw:
        return None
    try:
        return min(_MAX_RETRY_AFTER, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(_MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def classify(exc: BaseException, *, key_env_var: str | None = None) -> ProviderError:
    """Map any exception from an SDK call to a ProviderError (duck-typed over both SDKs)."""
    if isinstance(exc, ProviderError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        response = getattr(exc, "response", None)
        after = retry_after_seconds(getattr(response, "headers", None))
        detail = _short(str(exc))
        if status == 501:
            return ProviderError(
                f"provider does not implement this call (HTTP 501; wrong base URL or API?): {detail}",
                retryable=False,
            )
        if status in RETRYABLE_STATUS or status >= 500:
            what = {429: "rate limited", 529: "overloaded"}.get(status, f"HTTP {status}")
            return ProviderError(f"provider {what}: {detail}", retryable=True, retry_after=after)
        if status in (401, 403):
            hint = f"; check {key_env_var}" if key_env_var else ""
            return ProviderError(
                f"provider refused the credentials (HTTP {status}){hint}: {detail}", retryable=False
            )
        if status == 404:
            return ProviderError(
                f"provider answered 404 (unknown model or wrong base URL; pick one with --model): {detail}",
                retryable=False,
            )
        return ProviderError(f"provider rejected the request (HTTP {status}): {detail}", retryable=False)
    if "Timeout" in name or "Connection" in name or isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        return ProviderError(
            f"provider unreachable ({name}): {_short(str(exc))}", retryable=True, reached=False
        )
    # Response validation errors, JSON decode errors, missing fields: a malformed answer.
    return ProviderError(f"malformed provider response ({name}): {_short(str(exc))}", retryable=True)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call_with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    status: ProviderStatus,
    key_env_var: str | None = None,
    log: Callable[[str], None] | None = None,
) -> T:
    """Run `call` until it succeeds; raise ProviderError when it is not retryable or attempts run out."""

    def attempt() -> T:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - nothing from the provider may escape unclassified
            raise classify(exc, key_env_var=key_env_var) from exc

    def wait(state: tenacity.RetryCallState) -> float:
        return policy.delay(state.attempt_number - 1, _error(state).retry_after)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        err, seconds = _error(state), state.upcoming_sleep
        paused = (state.seconds_since_start or 0.0) >= policy.pause_after
        status.set("paused" if paused else "retrying", f"{err} (next try in {seconds:.0f} s)")
        if log is not None:
            n = state.attempt_number
            log(status.line() if paused else f"LLM call failed ({err}); retry {n} in {seconds:.1f} s")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
        stop=tenacity.stop_after_attempt(policy.max_attempts) if policy.max_attempts else tenacity.stop_never,
        wait=wait,
        sleep=policy.sleep,
        before_sleep=before_sleep,
        reraise=True,  # KeyboardInterrupt and permanent errors go through as they are
    )
    try:
        result = retrying(attempt)
    except ProviderError as err:
        status.set("ok")
        tries = retrying.statistics.get("attempt_number", 1)
        if err.retryable:  # the attempts ran out
            raise ProviderError(
                f"gave up after {tries} attempts: {err}", retryable=True, retry_after=err.retry_after
            ) from err
        raise
    tries = retrying.statistics.get("attempt_number", 1)
    if tries > 1 and log is not None:
        log(f"LLM call succeeded after {tries - 1} retries; resuming")
    status.set("ok")
    return result


def _error(state: tenacity.RetryCallState) -> ProviderError:
    """The ProviderError of the attempt that just failed."""
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, ProviderError)
    return exc
