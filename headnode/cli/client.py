"""A small client of the operator API (``/ops/``), for the CLI, the demo, tests and bench."""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_TIMEOUT = 30.0
DEFAULT_THROTTLED_WAIT = 60.0
#: answers that mean "nothing was done, send it again after Retry-After": throttled (429),
#: the head node's database unavailable for now (503: restarting, unreachable)
RETRIED_STATUSES = frozenset({429, 503})


class ApiError(Exception):
    """The API answered with an error body ``{"code", "message", "errors"?}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or {}
        # The whole body, for extra fields such as the "reasons" of InsufficientCapacity.
        self.body = body or {}
        #: seconds the API asked us to wait before sending the request again (429, 503)
        self.retry_after = retry_after


class ApiUnreachable(Exception):
    """Nothing answers at the API's address (not started, wrong URL, or timed out)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"cannot reach the head node at {url}: {detail}")
        self.url = url
        self.detail = detail


class ApiUntrusted(ApiUnreachable):
    """The API's HTTPS certificate is not one the client trusts."""


class PlainHttpRefused(Exception):
    """The operator token would travel in clear text to another host."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"refusing to send the operator token over plain HTTP to {url}: anyone on the "
            "way could read it. Use the head node's https:// URL (SDC_API_URL), or set "
            "SDC_ALLOW_PLAIN_HTTP=1 if the path is private (a VPN, an SSH tunnel)")
        self.url = url


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback; names other than ``localhost`` are not resolved."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(base_url: str, token: str | None, allow_plain_http: bool) -> None:
    """Raise PlainHttpRefused when ``token`` would go in clear text beyond loopback."""
    parts = urlsplit(base_url)
    if (token and parts.scheme == "http" and not allow_plain_http
            and not is_loopback(parts.hostname or "")):
        raise PlainHttpRefused(base_url)


class OpsClient:
    """JSON in, JSON out; every non-2xx answer becomes an :class:`ApiError`.

    HTTPS certificates are checked against ``ca_file`` (else the system's CAs); the token is
    never sent over plain HTTP beyond loopback unless ``allow_plain_http``."""

    def __init__(self, base_url: str, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 throttled_wait: float = DEFAULT_THROTTLED_WAIT,
                 ca_file: str | None = None, allow_plain_http: bool = False) -> None:
        check_transport(base_url, token, allow_plain_http)
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        #: seconds one request may spend waiting out 429 and 503 answers before the error is
        #: raised
        self.throttled_wait = throttled_wait
        self.session = requests.Session()
        #: given with every request: requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE in
        #: the environment win over a session's own ``verify``
        self.verify: str | bool = ca_file or True
        self.session.verify = self.verify
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body, params=params)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        """One call; a throttled one (429) or one the head node could not serve for now
        (503) is sent again after the wait the API asks for (Retry-After), within
        ``throttled_wait`` seconds in all."""
        waited = 0.0
        while True:
            try:
                return self._request_once(method, path, body, params)
            except ApiError as exc:
                delay = exc.retry_after
                if (exc.status not in RETRIED_STATUSES or delay is None
                        or waited + delay > self.throttled_wait):
                    raise
            time.sleep(delay)
            waited += delay

    def _request_once(self, method: str, path: str, body: Any,
                      params: dict[str, Any] | None) -> Any:
        url = self.url(path)
        # Drop unset filters so "?state=" never reaches the API as an empty filter.
        params = {k: v for k, v in (params or {}).items() if v is not None} or None
        try:
            resp = self.session.request(method, url, json=body, params=params,
                                        timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise untrusted(self.base_url, exc) from exc
        except requests.ConnectionError as exc:
            raise ApiUnreachable(self.base_url, "connection refused") from exc
        except requests.Timeout as exc:
            raise ApiUnreachable(self.base_url, f"no answer within {self.timeout:g} s") from exc
        if resp.status_code >= 400:
            raise error_from_response(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(resp.status_code, "BadResponse",
                           f"{method} {path} answered with non-JSON content") from exc

    def url(self, path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def ping(self) -> bool:
        """True when the API answers ``GET /ops/ping``; never raises."""
        try:
            self.session.get(self.url("/ops/ping"), timeout=min(self.timeout, 2.0),
                             verify=self.verify).raise_for_status()
        except requests.RequestException:
            return False
        return True


def untrusted(url: str, exc: requests.exceptions.SSLError) -> ApiUntrusted:
    reason = exc.args[0] if exc.args else exc
    # urllib3 nests the ssl error's text in its reason; the verify failure is what matters
    text = str(getattr(reason, "reason", reason))
    return ApiUntrusted(url, f"its TLS certificate is not trusted ({text}); point SDC_CA_FILE "
                             "at the CA that signed it (`sdc up` prints its file)")


def error_from_response(resp: requests.Response) -> ApiError:
    retry_after = _seconds(resp.headers.get("Retry-After"))
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        reason = resp.reason or "error"
        return ApiError(resp.status_code, f"HTTP{resp.status_code}", reason,
                        retry_after=retry_after)
    errors = body.get("errors")
    return ApiError(
        resp.status_code,
        str(body.get("code") or f"HTTP{resp.status_code}"),
        str(body.get("message") or resp.reason or ""),
        errors if isinstance(errors, dict) else None,
        body,
        retry_after,
    )


def _seconds(header: str | None) -> float | None:
    """Retry-After in its delay-seconds form (the only one our API sends)."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None
