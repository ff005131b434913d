"""Errors the services raise; the API maps each to a status code and a CloudAPI-style body
``{"code": ..., "message": ...}``. Services never know about HTTP."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 500
    code = "InternalError"
    #: seconds after which the same request may succeed (sent as Retry-After), if known
    retry_after: int | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ServiceError):
    status = 404
    code = "ResourceNotFound"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident} not found", kind=kind, id=ident)


class InvalidArgument(ServiceError):
    """A well-formed request naming something that cannot be used (an unknown package...)."""

    status = 422
    code = "InvalidArgument"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors={field: [message]})
        self.field = field


class Conflict(ServiceError):
    status = 409
    code = "Conflict"

    def __init__(self, message: str, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code:
            self.code = code


class InsufficientCapacity(Conflict):
    """Placement found no server; ``reasons`` counts servers per rejection reason."""

    code = "InsufficientCapacity"

    def __init__(self, message: str, reasons: dict[str, int]) -> None:
        super().__init__(message, reasons=reasons)
        self.reasons = reasons


class Throttled(ServiceError):
    """The head node is behind: the caller should send the same request again later."""

    status = 429
    code = "RequestThrottled"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
