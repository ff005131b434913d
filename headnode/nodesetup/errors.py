"""What can go wrong setting a node up, each with a code a job record and the API show."""

from __future__ import annotations

from typing import Any


class NodeSetupError(Exception):
    """A step could not be done; ``code`` is one word (NodeNotReady, InstallFailed, ...),
    ``message`` says what to do about it. Never holds a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}
