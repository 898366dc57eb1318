"""The API's one error type: a status, a short code, a message a person can act on."""

from __future__ import annotations


class ApiError(Exception):
    """Answered as {"error": code, "message": message, "status": status[, "field": field]}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.field = field
