"""The control protocol between memguardd and its clients.

One JSON object per line over a Unix stream socket.  A request::

    {"v": 1, "method": "status", "params": {}}

and its answer, either ``{"v": 1, "ok": true, "result": ...}`` or
``{"v": 1, "ok": false, "error": {"code": "unknown_method", "message": "..."}}``.
Error codes are stable strings; clients map them to exit codes.  A request
with a ``v`` the daemon does not speak gets ``unsupported_version``.
"""

from __future__ import annotations

import json

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024

# Stable error codes (docs/cli.md lists them).
BAD_REQUEST = "bad_request"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_METHOD = "unknown_method"
NOT_PERMITTED = "not_permitted"
NOT_READY = "not_ready"
NOT_FOUND = "not_found"
INTERNAL = "internal"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def request(method: str, params: dict | None = None) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "method": method, "params": params or {}})


def ok(result: object) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "ok": True, "result": result})


def error(code: str, message: str) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": message}})


def parse_request(line: bytes) -> tuple[str, dict]:
    """(method, params) of a request line.  Raises ProtocolError."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ProtocolError(BAD_REQUEST, f"not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("method"), str):
        raise ProtocolError(BAD_REQUEST, "expected an object with a string 'method'")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(UNSUPPORTED_VERSION,
                            f"protocol version {obj.get('v')!r} is not spoken here (this daemon speaks {PROTOCOL_VERSION})")
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError(BAD_REQUEST, "'params' must be an object")
    return obj["method"], params
