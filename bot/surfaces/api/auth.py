"""Who is calling (anonymous or an API key) and how often: key checks, fingerprints and per-client rate limits."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bot.surfaces.api.errors import ApiError


@dataclass(frozen=True)
class Caller:
    """Who is asking: anonymous (public only) or holding a valid API key (may ask as internal)."""

    client_id: str  # rate-limit identity: the key's fingerprint, else the client IP
    key_id: str | None = None  # short fingerprint of the API key, safe to log and store

    @property
    def authenticated(self) -> bool:
        """True when a configured API key was presented."""
        return self.key_id is not None


def key_fingerprint(key: str) -> str:
    """A short, non-reversible id for an API key (for logs, the store and rate limiting)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class TokenBucketLimiter:
    """Per-client token buckets: `per_minute` requests per minute with bursts up to the same number."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.per_minute = per_minute
        self.capacity = float(max(1, per_minute))
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, stamp)
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> tuple[bool, float, int]:
        """Spend one token; returns (allowed, seconds until the next token, tokens left)."""
        if self.per_minute <= 0:
            return True, 0.0, 0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            # Bounded memory: forget the least recently seen clients (they come back with a full bucket).
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        wait = 0.0 if allowed else (1.0 - tokens) / self.rate
        return allowed, wait, int(tokens)


class StoreLimiter:
    """The same token buckets kept in the store: every API process using that store shares one limit per client."""

    def __init__(self, store: Any, per_minute: int):
        self.store = store
        self.per_minute = per_minute

    def take(self, client: str, now: float | None = None) -> tuple[bool, float, int]:
        """Spend one token; returns (allowed, seconds until the next token, tokens left)."""
        if self.per_minute <= 0:
            return True, 0.0, 0
        # Wall-clock time, not monotonic: the stamps are compared across processes and machines.
        tokens, allowed = self.store.take_token(client, self.per_minute, time.time() if now is None else now)
        wait = 0.0 if allowed else (1.0 - tokens) / (self.per_minute / 60.0)
        return allowed, wait, int(tokens)


def rate_limit(limiter: TokenBucketLimiter | StoreLimiter, client: str) -> int:
    """Spend one token of `client`'s bucket or raise a 429 with Retry-After; returns the tokens left."""
    allowed, wait, left = limiter.take(client)
    if not allowed:
        retry = max(1, math.ceil(wait))
        raise ApiError(429, "rate_limited", f"Too many requests: the limit is {limiter.per_minute} per "
                       f"minute. Try again in {retry} s.",
                       headers={"Retry-After": str(retry), "X-RateLimit-Limit": str(limiter.per_minute),
                                "X-RateLimit-Remaining": "0"})
    return left


def caller_dependency(api_keys: tuple[str, ...], limiter: TokenBucketLimiter | StoreLimiter) -> Callable[..., Caller]:
    """The FastAPI dependency that identifies the caller and spends one rate-limit token per request."""
    bearer = HTTPBearer(auto_error=False, description="An API key from Settings.api_keys.")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from Settings.api_keys.")

    def caller(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer),
               x_key: str | None = Depends(header_key)) -> Caller:
        """Identify the caller and spend a rate-limit token; a wrong key is a 401, never a downgrade."""
        ip = request.client.host if request.client else "unknown"
        presented = (cred.credentials if cred else None) or x_key
        # Credentials that were sent but cannot be read (Basic/Token schemes, an empty Bearer or X-API-Key) are a
        # 401 like a wrong key: answering them as public would hide the caller's mistake.
        sent = request.headers.get("authorization") is not None or request.headers.get("x-api-key") is not None
        if sent and not (presented or "").strip():
            rate_limit(limiter, f"ip:{ip}")
            raise ApiError(401, "malformed_credentials", "Send an API key as 'Authorization: Bearer KEY' or "
                           "'X-API-Key: KEY', or send neither header to ask as a public user.",
                           headers={"WWW-Authenticate": "Bearer"})
        key_id = None
        if presented:
            if any(hmac.compare_digest(presented.encode(), k.encode()) for k in api_keys):
                key_id = key_fingerprint(presented)
            else:
                rate_limit(limiter, f"ip:{ip}")  # failed keys still cost the address a token (slows guessing)
                raise ApiError(401, "invalid_api_key", "The API key is not valid. Leave it out to ask as a "
                               "public user, or use a key from the server's api_keys setting.",
                               headers={"WWW-Authenticate": "Bearer"})
        who = Caller(client_id=key_id or f"ip:{ip}", key_id=key_id)
        rate_limit(limiter, who.client_id)
        return who

    return caller
