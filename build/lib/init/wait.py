"""Retry until a deadline, with capped exponential backoff; permanent errors fail at once."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

FIRST_DELAY = 0.05
# Polling a service that is not up costs a refused connection: cheap. A short
# cap means init finishes soon after PostgreSQL or S3 comes up.
MAX_DELAY = 0.25


class PermanentError(Exception):
    """Retrying cannot help (wrong password, access denied): stop now."""


def until_deadline(
    attempt: Callable[[float], T],
    deadline: float,
    describe: Callable[[Exception], str],
    is_permanent: Callable[[Exception], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call attempt(seconds_left) until it succeeds, a permanent error, or the deadline."""
    delay = FIRST_DELAY
    while True:
        remaining = deadline - clock()
        try:
            return attempt(max(remaining, 0.1))
        except Exception as error:  # noqa: BLE001 - classified below
            if is_permanent(error):
                raise PermanentError(describe(error)) from error
            remaining = deadline - clock()
            if remaining <= 0:
                raise TimeoutError(describe(error)) from error
            sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)
