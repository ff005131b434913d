"""The web console's sessions, kept in the head node's Redis so that signing out, or a new
password, ends them on every API process (a signed cookie alone would stay valid until it
expires, whoever held a copy).

A session is a random id (in the signed cookie) naming a Redis key that expires after
``SESSION_SECONDS`` without use; each login keeps the set of its session ids, so a password
change or removal ends them all.
"""

from __future__ import annotations

import functools
import secrets

import redis

from headnode.services.context import ServiceContext

#: a session not used for this long ends
SESSION_SECONDS = 8 * 3600
SESSION_KEY = "sdc:console:session:"
LOGIN_KEY = "sdc:console:login-sessions:"


def _client(ctx: ServiceContext) -> redis.Redis:
    return _client_for(ctx.settings.redis_url)


@functools.lru_cache(maxsize=8)
def _client_for(url: str) -> redis.Redis:
    """One client (its connection pool) per Redis URL: every console request asks whether
    its session is on, and a new connection per request would cost a connect and an AUTH."""
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def start(ctx: ServiceContext, login: str) -> str:
    """A new session of ``login``; returns its id."""
    sid = secrets.token_urlsafe(32)
    with _client(ctx).pipeline() as pipe:
        pipe.set(SESSION_KEY + sid, login, ex=SESSION_SECONDS)
        pipe.sadd(LOGIN_KEY + login, sid)
        pipe.expire(LOGIN_KEY + login, SESSION_SECONDS)
        pipe.execute()
    return sid


def alive(ctx: ServiceContext, sid: str, login: str) -> bool:
    """Whether the session is still on (and is ``login``'s); using it keeps it on."""
    owner = _client(ctx).getex(SESSION_KEY + sid, ex=SESSION_SECONDS)
    return owner is not None and str(owner) == login


def end(ctx: ServiceContext, sid: str) -> None:
    client = _client(ctx)
    owner = client.getdel(SESSION_KEY + sid)
    if owner is not None:
        client.srem(LOGIN_KEY + str(owner), sid)


def end_all(ctx: ServiceContext, login: str) -> int:
    """End every session of ``login``; returns how many were on."""
    client = _client(ctx)
    sids = [str(s) for s in client.smembers(LOGIN_KEY + login)]
    ended = client.delete(*(SESSION_KEY + s for s in sids)) if sids else 0
    client.delete(LOGIN_KEY + login)
    return int(ended)
