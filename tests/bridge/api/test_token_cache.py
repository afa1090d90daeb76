"""The verified-token cache in bridge.api._crypto gives exactly PyJWT's answers, faster."""

from __future__ import annotations

import time

import jwt
import pytest

from bridge.api import _crypto
from bridge.api._crypto import decode_token, issue_token
from bridge.api._types import ApiError

SECRET = b"s" * 32


def test_cached_token_keeps_its_claims_and_is_read_only() -> None:
    token = issue_token(SECRET, {"sub": "dev-1", "mender.device": True}, time.time(), 3600)
    first = decode_token(SECRET, token)
    assert (SECRET, token) in _crypto._VERIFIED
    second = decode_token(SECRET, token)
    assert second is first and second["sub"] == "dev-1"
    with pytest.raises(TypeError):
        second["sub"] = "dev-2"  # type: ignore[index]


def test_cached_token_expires_on_time() -> None:
    iat = time.time()
    token = issue_token(SECRET, {"sub": "dev-1"}, iat, 60)
    assert decode_token(SECRET, token)["sub"] == "dev-1"
    exp = int(iat) + 60
    assert decode_token(SECRET, token, now=exp - 0.5)["sub"] == "dev-1"
    with pytest.raises(ApiError) as err:
        decode_token(SECRET, token, now=exp)  # PyJWT: expired when exp <= now
    assert err.value.status == 401 and "expired" in str(err.value)
    assert (SECRET, token) not in _crypto._VERIFIED


def test_other_secret_and_tampered_tokens_are_refused_even_when_a_twin_is_cached() -> None:
    token = issue_token(SECRET, {"sub": "dev-1"}, time.time(), 3600)
    decode_token(SECRET, token)
    with pytest.raises(ApiError) as err:
        decode_token(b"t" * 32, token)
    assert err.value.status == 401
    head, _body, sig = token.split(".")
    forged = jwt.encode({"sub": "dev-2", "iss": "Mender", "exp": int(time.time()) + 60}, b"x" * 32)
    for bad in (f"{head}.{forged.split('.')[1]}.{sig}", token + "x", "not-a-token"):
        with pytest.raises(ApiError):
            decode_token(SECRET, bad)
        assert (SECRET, bad) not in _crypto._VERIFIED


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_crypto, "VERIFIED_TOKENS_MAX", 4)
    _crypto._VERIFIED.clear()
    tokens = [issue_token(SECRET, {"sub": f"dev-{i}"}, time.time(), 3600) for i in range(6)]
    for tok in tokens:
        decode_token(SECRET, tok)
    assert len(_crypto._VERIFIED) == 4
    assert (SECRET, tokens[0]) not in _crypto._VERIFIED and (SECRET, tokens[-1]) in _crypto._VERIFIED
    assert decode_token(SECRET, tokens[0])["sub"] == "dev-0"  # evicted: verified again
