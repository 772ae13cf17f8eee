"""Stand-ins for the official SDKs' exceptions, shaped as test/vectors/README.md describes ("Python")."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional


class OpenAIAPIStatusError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec.get("message", ""))
        self.status_code = spec["status"]
        self.code = spec.get("code")
        self.type = spec.get("type")
        self.message = spec.get("message", "")
        self.body = {"code": self.code, "type": self.type, "message": self.message}
        self.response = SimpleNamespace(status_code=self.status_code, headers=dict(spec.get("headers") or {}))


class AnthropicAPIStatusError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        error = spec.get("error") or {}
        super().__init__(error.get("message", ""))
        self.status_code = spec["status"]
        self.message = error.get("message", "")
        self.body = {"type": "error", "error": dict(error)}
        self.response = SimpleNamespace(status_code=self.status_code, headers=dict(spec.get("headers") or {}))


OpenAIAPIStatusError.__name__ = AnthropicAPIStatusError.__name__ = "APIStatusError"


class APIError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(f"{spec['code']} {spec.get('status', '')}. {spec.get('message', '')}")
        self.code = spec["code"]
        self.status = spec.get("status")
        self.message = spec.get("message", "")
        self.details = {
            "error": {
                "code": self.code,
                "status": self.status,
                "message": self.message,
                "details": spec.get("details", []),
            }
        }
        self.response = SimpleNamespace(status_code=self.code, headers=dict(spec.get("headers") or {}))


class APITimeoutError(Exception):
    pass


class APIConnectionError(Exception):
    pass


def native_error(spec: Optional[dict[str, Any]]) -> Optional[Exception]:
    if spec is None:
        return None
    shape = spec["shape"]
    if shape == "openai":
        return OpenAIAPIStatusError(spec)
    if shape == "anthropic":
        return AnthropicAPIStatusError(spec)
    if shape == "gemini":
        return APIError(spec)
    if shape == "timeout":
        return APITimeoutError("Request timed out.")
    if shape == "connection":
        return APIConnectionError("Connection error.")
    raise AssertionError(f"unknown error shape {shape!r}")


def openai_error(status: int, code: Optional[str] = None, message: str = "", headers: Optional[dict[str, str]] = None) -> Exception:
    return OpenAIAPIStatusError({"status": status, "code": code, "type": code, "message": message, "headers": headers or {}})
