"""HTTP Signature authentication of CloudAPI requests (draft-cavage-http-signatures, as
CloudAPI, node-smartdc-auth and the ``triton`` CLI use it).

A request carries::

    Date: Thu, 26 Nov 2026 12:00:00 GMT
    Authorization: Signature keyId="/LOGIN/keys/FINGERPRINT",algorithm="rsa-sha256",
                   headers="(request-target) date",signature="BASE64"

``headers`` defaults to ``date``. The fingerprint is the key's MD5 (``aa:bb:...``) or SHA256
(``SHA256:...``) fingerprint. The signing string is one ``name: value`` line per signed
header, ``(request-target)`` being ``METHOD-lowercase PATH?QUERY``.

Checks, in order, each failure an :class:`AuthError` (401) with CloudAPI's code:
header syntax (InvalidHeader), algorithm and keyId (InvalidCredentials), Date present and
within :data:`CLOCK_SKEW` of our clock (InvalidHeader), account and key (InvalidCredentials),
signature (InvalidSignature), replay (InvalidCredentials). Then the path's login: one's own
(or ``my``) passes; another login passes only for an operator (``triton --act-as``: the
operator signs with their own key and names the other account in the path), else 403
NotAuthorized, as CloudAPI answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote, unquote

import redis
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from sqlalchemy import select

from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound, ServiceError
from headnode.store.models import Account, Key
from sdccommon.sshkeys import BadKey, ParsedKey, parse_public_key

#: seconds a request's Date may differ from our clock (CloudAPI: 5 minutes)
CLOCK_SKEW = 300
#: a signature is remembered this long; older requests fail the Date check anyway
REPLAY_TTL = 2 * CLOCK_SKEW + 60
#: a GET or HEAD repeated this soon after its first sighting is a client polling faster than
#: the Date header's one-second resolution (RSA signatures of one string are identical), not
#: a replay. A repeat that changes state is always refused.
SAFE_REPEAT_GRACE = 2.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_HEADER_CHARS = 8192
DEFAULT_SIGNED = ("date",)
REQUEST_TARGET = "(request-target)"

# hash named by the algorithm; the key type must match the family
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_FAMILIES = {"rsa": rsa.RSAPublicKey, "ecdsa": ec.EllipticCurvePublicKey}
_CURVE_HASHES: dict[str, hashes.HashAlgorithm] = {
    "secp256r1": hashes.SHA256(), "secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512(),
}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')
_MD5_HEX = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){15}$")


class AuthError(ServiceError):
    """Authentication failed: 401 with CloudAPI's code (the API adds WWW-Authenticate)."""

    status = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotAuthorized(ServiceError):
    """Authenticated, but the path names an account the caller may not act for."""

    status = 403
    code = "NotAuthorized"


@dataclass(frozen=True)
class Caller:
    """Who signed a request, and for which account it acts.

    ``account_uuid``/``login``: the key's owner (the signer). ``acting_as``: the login named
    in the path when it is another account (only operators may), else None. Services that
    scope by account use :attr:`target_uuid` / :attr:`target_login`.
    """

    account_uuid: str
    login: str
    key_fingerprint: str  # MD5 form, as CloudAPI lists keys
    operator: bool
    acting_as: str | None = None
    acting_as_uuid: str | None = None

    @property
    def target_uuid(self) -> str:
        return self.acting_as_uuid or self.account_uuid

    @property
    def target_login(self) -> str:
        return self.acting_as or self.login

    def as_job_caller(self) -> dict[str, Any]:
        """What jobs record as their caller (machine audit shows it)."""
        caller: dict[str, Any] = {"type": "account", "login": self.login,
                                  "account_uuid": self.account_uuid,
                                  "key_fingerprint": self.key_fingerprint,
                                  "operator": self.operator}
        if self.acting_as:
            caller["acting_as"] = self.acting_as
            caller["acting_as_uuid"] = self.acting_as_uuid
        return caller


@dataclass(frozen=True)
class SignatureParams:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes
    signature_b64: str


# ---------------------------------------------------------------------------- parsing


def parse_authorization(value: str | None) -> SignatureParams:
    """The ``Authorization: Signature k="v",...`` header, or an AuthError naming the fault."""
    if not value:
        raise AuthError("InvalidCredentials",
                        "You must make authenticated requests to use CloudAPI")
    if len(value) > MAX_HEADER_CHARS:
        raise AuthError("InvalidHeader", "the Authorization header is too long")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "signature":
        raise AuthError("InvalidHeader",
                        f"authorization scheme {scheme!r} is not supported (use Signature)")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            raise AuthError("InvalidHeader", "Invalid authorization header: expected "
                            'name="value" pairs separated by commas')
        name = match.group(1).lower()
        if name in params:
            raise AuthError("InvalidHeader", f"Invalid authorization header: {name} twice")
        params[name] = match.group(2)
        pos = match.end()
    for required in ("keyid", "algorithm", "signature"):
        if not params.get(required):
            raise AuthError("InvalidHeader",
                            f"Invalid authorization header: {required} is missing")
    signed = tuple(params.get("headers", "").lower().split()) or DEFAULT_SIGNED
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError("InvalidHeader", "Invalid authorization header: the signature is "
                        "not base64") from exc
    return SignatureParams(key_id=params["keyid"], algorithm=params["algorithm"].lower(),
                           headers=signed, signature=signature,
                           signature_b64=params["signature"])


def parse_key_id(key_id: str) -> tuple[str, str]:
    """``/LOGIN/keys/FINGERPRINT`` -> (login, fingerprint). Sub-user keys are not supported."""
    parts = key_id.split("/", 3)  # a SHA256 fingerprint's base64 may hold "/"
    if len(parts) != 4 or parts[0] != "" or parts[2] != "keys" or not parts[1] or not parts[3]:
        raise AuthError("InvalidCredentials", f"Invalid KeyId {key_id} in authorization header")
    return unquote(parts[1]), parts[3]


def normalise_fingerprint(fingerprint: str) -> tuple[str, str]:
    """-> ("md5", "aa:bb:...") or ("sha256", "SHA256:...")."""
    if fingerprint.upper().startswith("SHA256:"):
        return "sha256", "SHA256:" + fingerprint[7:]
    value = fingerprint[4:] if fingerprint.upper().startswith("MD5:") else fingerprint
    value = value.lower()
    if ":" not in value and len(value) == 32:
        value = ":".join(value[i:i + 2] for i in range(0, 32, 2))
    if not _MD5_HEX.match(value):
        raise AuthError("InvalidCredentials", f"Invalid key fingerprint {fingerprint}")
    return "md5", value


def lower_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        # repeated headers are joined as HTTP/1.1 allows (and as the signer saw them)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def signing_string(method: str, path_with_query: str, headers: Mapping[str, str],
                   signed: Iterable[str]) -> str:
    """The text the client signed. ``headers`` must have lower-case names."""
    lines = []
    for name in signed:
        if name == REQUEST_TARGET:
            lines.append(f"{REQUEST_TARGET}: {method.lower()} {path_with_query}")
        elif name in headers:
            lines.append(f"{name}: {headers[name].strip()}")
        else:
            raise AuthError("InvalidHeader", f"the signed header {name!r} is missing")
    return "\n".join(lines)


def request_target(environ: Mapping[str, Any]) -> str:
    """The path and query exactly as the client sent them (the signer signed those bytes):
    gunicorn's RAW_URI, else the WSGI path re-quoted."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")),
                 safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


# ---------------------------------------------------------------------------- checks


DATE_HEADERS = ("date", "x-date")


def check_date(headers: Mapping[str, str], now: float, signed: Iterable[str] = DATE_HEADERS,
               skew: float = CLOCK_SKEW) -> float:
    """The signed date as a unix time. Every date header the signature covers (``signed``)
    must be present and within ``skew`` of ``now``: an unsigned one proves nothing, as
    whoever replays the request can write it afresh."""
    covered = [name for name in DATE_HEADERS if name in set(signed)]
    if not covered:
        raise AuthError("InvalidHeader", "the date header must be among the signed headers")
    return min((_checked_date(name, headers.get(name), now, skew) for name in covered),
               key=lambda when: abs(now - when))


def _checked_date(name: str, value: str | None, now: float, skew: float) -> float:
    label = "Date" if name == "date" else "X-Date"
    if not value:
        raise AuthError("InvalidHeader", f"the {label} header is signed but absent")
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError) as exc:
        raise AuthError("InvalidHeader", f"the {label} header {value!r} is not an HTTP date") \
            from exc
    if abs(now - when) > skew:
        raise AuthError("InvalidHeader", f"the {label} header is {int(now - when)} s from the "
                        f"server's clock (at most {int(skew)} s allowed)")
    return when


def verify_signature(key: ParsedKey, algorithm: str, text: str, signature: bytes) -> None:
    """Raise InvalidCredentials for an algorithm the key cannot make, InvalidSignature for a
    signature that does not match."""
    public = key.key
    data = text.encode()
    try:
        if algorithm in ("ed25519", "ed25519-sha512"):
            if not isinstance(public, ed25519.Ed25519PublicKey):
                raise _wrong_algorithm(algorithm, key)
            public.verify(signature, data)
            return
        family, _, hash_name = algorithm.partition("-")
        if family not in _FAMILIES or hash_name not in _HASHES:
            raise AuthError("InvalidCredentials",
                            f"{algorithm} is not a supported signing algorithm")
        if not isinstance(public, _FAMILIES[family]):
            raise _wrong_algorithm(algorithm, key)
        digest = _HASHES[hash_name]()
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            _verify_ecdsa(public, signature, data, digest)
    except CryptoInvalidSignature as exc:
        raise AuthError("InvalidSignature",
                        "The signature we calculated does not match the one you sent") from exc
    except ValueError as exc:  # a signature of the wrong length or shape
        raise AuthError("InvalidSignature",
                        "The signature we calculated does not match the one you sent") from exc


def _verify_ecdsa(public: ec.EllipticCurvePublicKey, signature: bytes, data: bytes,
                  digest: hashes.HashAlgorithm) -> None:
    """http-signature sends ECDSA signatures DER-encoded, as cryptography expects. Signers
    hash with the curve's own size (sshpk: P-384 -> SHA-384), and some name the algorithm
    ``ecdsa-sha256`` whatever the curve: the curve's hash is tried when the named one fails.
    """
    try:
        public.verify(signature, data, ec.ECDSA(digest))
    except CryptoInvalidSignature:
        natural = _CURVE_HASHES.get(public.curve.name)
        if natural is None or natural.name == digest.name:
            raise
        public.verify(signature, data, ec.ECDSA(natural))


def _wrong_algorithm(algorithm: str, key: ParsedKey) -> AuthError:
    return AuthError("InvalidCredentials",
                     f"algorithm {algorithm} cannot be used with a {key.key_type} key")


# ---------------------------------------------------------------------------- replays


class ReplayCache(Protocol):
    def first_seen(self, digest: str, now: float) -> float | None:
        """Remember ``digest`` at ``now``; return when it was first seen if it already was."""


class RedisReplayCache:
    """``SET NX`` with an expiry: shared by every API worker, forgotten after REPLAY_TTL."""

    PREFIX = "sdc:httpsig:"

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def first_seen(self, digest: str, now: float) -> float | None:
        key = self.PREFIX + digest
        if self.client.set(key, repr(now), nx=True, ex=REPLAY_TTL):
            return None
        seen = self.client.get(key)
        try:
            return float(seen) if seen is not None else now
        except ValueError:
            return now


@lru_cache(maxsize=8)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def replay_cache_for(ctx: ServiceContext) -> ReplayCache:
    return RedisReplayCache(_redis_client(ctx.settings.redis_url))


def request_digest(signer: str, signature: bytes, method: str, path_with_query: str,
                   body: bytes | None) -> str:
    """One request: who signed it (the resolved account and key, never the key id's text,
    which one key can be named by in many ways), its signature's bytes and what it asks.
    Distinct requests in one second can share a signature when only ``date`` is signed; a
    replay repeats all of it."""
    h = hashlib.sha256()
    for part in (signer.encode(), signature, method.upper().encode(),
                 path_with_query.encode()):
        h.update(hashlib.sha256(part).digest())
    h.update(hashlib.sha256(body or b"").digest())
    return h.hexdigest()


class ReplayCacheUnavailable(ServiceError):
    """The replay cache cannot be reached: refuse rather than let a replay through."""

    status = 503
    code = "ServiceUnavailable"


def check_replay(cache: ReplayCache, method: str, digest: str, now: float) -> None:
    try:
        first = cache.first_seen(digest, now)
    except redis.RedisError as exc:
        raise ReplayCacheUnavailable("cannot check this request against replays now "
                                     "(the replay cache is unreachable); try again") from exc
    if first is None:
        return
    if method.upper() in SAFE_METHODS and now - first <= SAFE_REPEAT_GRACE:
        return
    raise AuthError("InvalidCredentials", "this signed request was already used (replay); "
                    "sign each request afresh")


# ---------------------------------------------------------------------------- accounts


def path_login(path_with_query: str) -> str | None:
    """The account a CloudAPI path names (its first segment), or None for ``/``."""
    path = path_with_query.split("?", 1)[0]
    first = path.lstrip("/").split("/", 1)[0]
    return unquote(first) or None


def find_key(ctx: ServiceContext, login: str, fingerprint: str) -> tuple[Account, Key]:
    kind, value = normalise_fingerprint(fingerprint)
    column = Key.fingerprint_md5 if kind == "md5" else Key.fingerprint_sha256
    with ctx.read() as session:
        account = session.scalar(select(Account).where(Account.login == login))
        if account is None:
            raise AuthError("InvalidCredentials", f"Invalid account {login}")
        key = session.scalar(select(Key).where(Key.account_uuid == account.uuid,
                                               column == value))
        if key is None:
            raise AuthError("InvalidCredentials", f"Invalid key {fingerprint}")
        return account, key


def _target_account(ctx: ServiceContext, signer: Account, login: str | None) -> Account | None:
    """The account the path acts on when it is not the signer's, checked for permission."""
    if login is None or login == "my" or login == signer.login:
        return None
    if not signer.operator:
        raise NotAuthorized(f"You do not have permission to access {login}")
    with ctx.read() as session:
        target = session.scalar(select(Account).where(Account.login == login))
    if target is None:
        raise NotFound("account", login)
    return target


def authenticate(ctx: ServiceContext, method: str, path_with_query: str,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]], *,
                 body: bytes | None = None, now: float | None = None,
                 replay: ReplayCache | None = None) -> Caller:
    """Check a CloudAPI request's signature; return who made it and for whom.

    ``path_with_query`` is the request target exactly as sent (see :func:`request_target`);
    ``body`` (optional) tells apart different requests that share a date-only signature.
    """
    now = time.time() if now is None else now
    lowered = lower_headers(headers)
    params = parse_authorization(lowered.get("authorization"))
    login, fingerprint = parse_key_id(params.key_id)
    if params.algorithm not in ("ed25519", "ed25519-sha512"):
        family, _, hash_name = params.algorithm.partition("-")
        if family not in _FAMILIES or hash_name not in _HASHES:
            raise AuthError("InvalidCredentials",
                            f"{params.algorithm} is not a supported signing algorithm")
    check_date(lowered, now, params.headers)
    text = signing_string(method, path_with_query, lowered, params.headers)
    account, key_row = find_key(ctx, login, fingerprint)
    try:
        parsed = parse_public_key(key_row.key)
    except BadKey as exc:  # stored keys were checked on the way in; refuse, never crash
        raise AuthError("InvalidCredentials", f"Invalid key {fingerprint}") from exc
    verify_signature(parsed, params.algorithm, text, params.signature)
    target = _target_account(ctx, account, path_login(path_with_query))
    cache = replay if replay is not None else replay_cache_for(ctx)
    signer = f"{account.uuid}/{key_row.fingerprint_sha256}"
    check_replay(cache, method, request_digest(signer, params.signature, method,
                                               path_with_query, body), now)
    return Caller(account_uuid=account.uuid, login=account.login,
                  key_fingerprint=key_row.fingerprint_md5, operator=account.operator,
                  acting_as=target.login if target else None,
                  acting_as_uuid=target.uuid if target else None)
