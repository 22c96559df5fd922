"""The auth app's password check behind a short per-worker cache (MLFLOW_AUTH_MODE=mlflow).

MLflow's basic-auth app verifies the password with werkzeug's default hash
(scrypt, about 75 ms of CPU) on every request, and 2.x verifies it again for
each `authenticate_request()` a request makes (the admin check, the
permission check). Releases from 3.12 have a cache of their own
(auth_cache_ttl_seconds); for older ones basic_auth.ini names this function
as `authorization_function`.

A successful check is remembered in this worker's memory for TTL_SECONDS,
keyed by the user name and an HMAC of the password under a key made at
import (so neither the password nor a digest usable offline is kept). A
failed check drops every entry of that user. An empty password never passes,
whatever the store holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

TTL_SECONDS = 30.0  # generator/artifacts/auth.py CACHE_TTL_SECONDS, the same as 3.12+'s setting
MAX_ENTRIES = 10000

_key = secrets.token_bytes(32)
_lock = threading.Lock()
_accepted: dict[tuple[str, bytes], float] = {}  # (user, HMAC of the password) -> when it expires


def _entry(username: str, password: str) -> tuple[str, bytes]:
    return username, hmac.new(_key, password.encode("utf-8"), hashlib.sha256).digest()


def remembered(username: str, password: str, now: float | None = None) -> bool:
    now = time.monotonic() if now is None else now
    key = _entry(username, password)
    with _lock:
        expires = _accepted.get(key)
        if expires is None:
            return False
        if expires <= now:
            del _accepted[key]
            return False
        return True


def remember(username: str, password: str, now: float | None = None) -> None:
    now = time.monotonic() if now is None else now
    with _lock:
        if len(_accepted) >= MAX_ENTRIES:
            for key in [key for key, expires in _accepted.items() if expires <= now] or list(_accepted):
                del _accepted[key]
        _accepted[_entry(username, password)] = now + TTL_SECONDS


def forget(username: str) -> None:
    with _lock:
        for key in [key for key in _accepted if key[0] == username]:
            del _accepted[key]


def check(username: str, password: str, verify) -> bool:
    """`verify(username, password)` is the store's slow check; it runs only on a miss."""
    if not username or not password:
        return False
    if remembered(username, password):
        return True
    if verify(username, password):
        remember(username, password)
        return True
    forget(username)
    return False


def authenticate_request_basic_auth():
    """MLflow's authenticate_request_basic_auth with the cache in front of the store."""
    from flask import request
    from mlflow.server.auth import make_basic_auth_response, store

    authorization = request.authorization
    if authorization is None:
        return make_basic_auth_response()
    if check(authorization.username or "", authorization.password or "", store.authenticate_user):
        return authorization
    return make_basic_auth_response()
