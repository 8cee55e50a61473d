"""gunicorn's gevent worker, with the errors gunicorn answers itself in the API's error shape.

Some requests never reach Django: gunicorn's parser refuses an oversized header (431), a
malformed request line, header or Content-Length (400), a request line too long (414). Its
stock answer is an HTML page, which an OpenAI SDK cannot read. This worker answers those in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}` as JSON with an
`x-request-id`, unless the request is known to be for a portal page (then gunicorn's own page).
For /v1/messages the body is Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`,
with the id as `request-id` too (core.anthropic_errors renders the same inside Django).

Kept outside the `portal` package on purpose: gunicorn loads the worker class in the master,
and importing `portal` there would import Celery and Django before gevent patches the workers.
"""

from __future__ import annotations

import email.utils
import json
import secrets
import time

from gunicorn import util
from gunicorn.http import errors, wsgi
from gunicorn.workers.ggevent import GeventWorker

API_PREFIXES = ("/v1/", "/api/")
ANTHROPIC_PREFIX = "/v1/messages"


def _error_code(exc: Exception, status: int) -> str:
    if isinstance(exc, errors.LimitRequestHeaders):
        return "headers_too_large"
    if isinstance(exc, errors.LimitRequestLine):
        return "request_line_too_long"
    if isinstance(exc, errors.InvalidHeader) and "content-length" in str(exc).lower():
        return "invalid_content_length"
    if isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName, errors.ObsoleteFolding)):
        return "invalid_header"
    if isinstance(
        exc, (errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion)
    ):
        return "invalid_request_line"
    if status >= 500:
        return "server_error"
    return "invalid_request"


def _message(exc: Exception, status: int) -> str:
    if isinstance(exc, errors.LimitRequestHeaders):
        return "The request headers are too large for this server (one header or all of them)."
    if isinstance(exc, errors.InvalidHeader) and "content-length" in str(exc).lower():
        return "The Content-Length header is not a valid byte count."
    if status >= 500:
        return "The server failed to handle this request; please retry."
    # gunicorn's own wording names the malformed part (request line, header, method, ...).
    return f"The HTTP request is malformed: {exc}."


def error_response(exc: Exception, status: int, reason: str, *, anthropic: bool = False) -> bytes:
    """A complete HTTP/1.1 answer with the error as JSON in OpenAI's shape (or Anthropic's)."""
    request_id = f"req_{secrets.token_hex(12)}"
    kind = "api_error" if status >= 500 else "invalid_request_error"
    if anthropic:
        error: dict = {
            "type": "error",
            "error": {"type": kind, "message": _message(exc, status)},
            "request_id": request_id,
        }
    else:
        error = {
            "error": {
                "message": _message(exc, status),
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": _error_code(exc, status),
            }
        }
    body = json.dumps(error).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        + (f"request-id: {request_id}\r\n" if anthropic else "")
        + "\r\n"
    )
    return head.encode("latin-1") + body


def _half_parsed_path(exc: Exception) -> str | None:
    """The path of a request refused while its headers were parsed. gunicorn reads the request
    line first, then the headers; a refused header raises out of the request's constructor, so
    `req` is None, but the request being built is still `self` in its parse frame."""
    tb = exc.__traceback__
    while tb is not None:
        path = getattr(tb.tb_frame.f_locals.get("self"), "path", None)
        if isinstance(path, str):
            return path
        tb = tb.tb_next
    return None


def _is_anthropic_request(req, exc: Exception) -> bool:
    path = getattr(req, "path", None) if req is not None else _half_parsed_path(exc)
    return isinstance(path, str) and path.startswith(ANTHROPIC_PREFIX)


def _is_page_request(req) -> bool:
    path = getattr(req, "path", None)
    return isinstance(path, str) and not path.startswith(API_PREFIXES)


class _Captured:
    """The client socket, except that what gunicorn writes is kept instead of sent."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def __getattr__(self, name):
        return getattr(self._sock, name)


class CoalescingResponse(wsgi.Response):
    """gunicorn's HTTP/1 response, its headers sent in one write with the first body bytes.

    gunicorn writes the headers, then each body chunk, with a sendall each: on a socket
    without Nagle's delay each is a packet and a wake-up of the client. A JSON answer was two
    writes (three when chunked), a stream's first token the third. Here the headers wait, in
    memory, for the body bytes of the same `write` call; whatever `write` did not send them
    with (a no-body answer, an empty chunk) they are sent alone right after, as before, and
    every other path (sendfile, close) writes them as gunicorn does."""

    _held = b""
    _holding = False

    def send_headers(self) -> None:
        if self.headers_sent or not self._holding:
            return super().send_headers()
        real = self.sock
        self.sock = captured = _Captured(real)
        try:
            super().send_headers()
        finally:
            self.sock = real
        self._held = captured.sent
        return None

    def write(self, arg) -> None:
        self._holding = True
        try:
            super().write(arg)
        finally:
            self._holding = False
        held, self._held = self._held, b""
        if held:  # nothing went with them
            self.sock.sendall(held)

    def _emit_body(self, data: bytes) -> None:
        held, self._held = self._held, b""
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(held + data)


class SettledConfig:
    """gunicorn's configuration as a worker reads it: each setting looked up once.

    `Config.__getattr__` finds a setting only after ordinary attribute lookup has failed
    (an AttributeError raised and caught) and then asks the setting for its value: gunicorn
    reads ~30 settings that way for every request (its parser alone 18). A worker never
    changes its configuration (a reload starts new workers), so the first answer is kept as
    an attribute of its own. Names that are not settings still raise AttributeError."""

    def __init__(self, cfg) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


_date = (0, "")


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's `util.http_date`, the Date header of every response, formatted once a
    second instead of once a response (email.utils.formatdate costs ~2.3 us; the header
    counts whole seconds either way)."""
    global _date
    if timestamp is not None:
        return email.utils.formatdate(timestamp, localtime=False, usegmt=True)
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, localtime=False, usegmt=True))
    return _date[1]


class ApiErrorGeventWorker(GeventWorker):
    def init_process(self):
        self.cfg = SettledConfig(self.cfg)
        util.http_date = http_date
        # wsgi.create() makes the HTTP/1 response of every request from this name.
        wsgi.Response = CoalescingResponse  # type: ignore[misc]
        super().init_process()

    def handle_error(self, req, client, addr, exc):
        request = req or getattr(exc, "req", None)
        if _is_page_request(request):
            return super().handle_error(req, client, addr, exc)
        # gunicorn picks the status, logs and writes the access line: let it, into a capture,
        # and send the same status with a JSON body instead of its HTML page.
        captured = _Captured(client)
        super().handle_error(req, captured, addr, exc)
        status_line = captured.sent.split(b"\r\n", 1)[0].decode("latin-1")
        _, status, reason = [*status_line.split(" ", 2), "", ""][:3]
        if not status.isdigit():
            return None
        try:
            anthropic = _is_anthropic_request(request, exc)
            util.write_nonblock(
                client, error_response(exc, int(status), reason, anthropic=anthropic)
            )
        except Exception:
            self.log.debug("Failed to send error message.")
        return None
