"""init/authcache.py, the cached password check the auth app uses before MLflow 3.12 (it runs live in the
team-accounts end-to-end tests on 2.9.2; here its rules one by one, with a counting verifier)."""

from __future__ import annotations

import pytest

from init import authcache


class Verifier:
    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.calls = 0

    def __call__(self, username: str, password: str) -> bool:
        self.calls += 1
        return self.passwords.get(username) == password


@pytest.fixture(autouse=True)
def empty_cache():
    authcache._accepted.clear()
    yield
    authcache._accepted.clear()


def test_a_success_is_checked_once_then_remembered():
    verify = Verifier({"alice": "alice-password-1"})
    assert all(authcache.check("alice", "alice-password-1", verify) for _ in range(5))
    assert verify.calls == 1


def test_a_wrong_password_is_never_remembered_and_drops_the_users_entries():
    verify = Verifier({"alice": "alice-password-1"})
    assert authcache.check("alice", "alice-password-1", verify)
    assert not authcache.check("alice", "wrong-password", verify)
    assert not authcache.check("alice", "wrong-password", verify)
    assert verify.calls == 3
    assert authcache.check("alice", "alice-password-1", verify)
    assert verify.calls == 4, "the failure dropped the remembered success"


def test_an_empty_password_never_passes_whatever_the_store_says():
    verify = Verifier({"admin": ""})
    assert not authcache.check("admin", "", verify)
    assert not authcache.check("", "", verify)
    assert verify.calls == 0


def test_an_entry_expires_after_the_ttl():
    authcache.remember("alice", "alice-password-1", now=100.0)
    assert authcache.remembered("alice", "alice-password-1", now=100.0 + authcache.TTL_SECONDS - 0.1)
    assert not authcache.remembered("alice", "alice-password-1", now=100.0 + authcache.TTL_SECONDS)


def test_the_cache_keeps_no_password():
    authcache.remember("alice", "alice-password-1")
    assert all("alice-password-1".encode() not in key[1] for key in authcache._accepted)
    assert all(len(key[1]) == 32 for key in authcache._accepted)


def test_it_stays_bounded():
    for number in range(authcache.MAX_ENTRIES + 5):
        authcache.remember(f"user{number}", "password-12345")
    assert len(authcache._accepted) <= authcache.MAX_ENTRIES


def test_the_ttl_is_the_generated_ini_setting():
    from generator.artifacts import auth

    assert authcache.TTL_SECONDS == auth.CACHE_TTL_SECONDS
