"""The one error hierarchy of Angora: every error a user can meet derives from AngoraError."""
from __future__ import annotations

from typing import Any, Sequence


class AngoraError(Exception):
    """Raised for any problem Angora reports to a user; `status` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        """The JSON body the API answers with."""
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class DefinitionError(AngoraError):
    """Raised when job definition files are invalid; `problems` lists every error found."""

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        super().__init__(
            f"{len(lines)} error(s) in job definitions:\n" + "\n".join(lines),
            detail=lines,
        )


class InvalidInput(AngoraError):
    """Raised when a message, parameter or request is malformed."""


class NotFound(AngoraError):
    """Raised when a job, run, execution or schedule does not exist."""

    status = 404


class Conflict(AngoraError):
    """Raised when an action does not fit the current state (e.g. killing a finished execution)."""

    status = 409


class Unavailable(AngoraError):
    """Raised when Redis is unreachable or out of memory, or a budget is used up (see Overloaded)."""

    status = 503


class Overloaded(Unavailable):
    """Raised when a budget (accepted work not finished, Redis memory) is used up: retry after `retry_after` s."""

    def __init__(self, message: str, detail: Any = None, retry_after: int = 5) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class Unauthorized(AngoraError):
    """Raised when a request lacks valid credentials."""

    status = 401


class Forbidden(AngoraError):
    """Raised when a request is understood and refused: a foreign origin, a read-only rq-dashboard."""

    status = 403


class Throttled(AngoraError):
    """Raised when a client has failed to log in too often; it may try again after `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.retry_after = max(1, int(retry_after))
