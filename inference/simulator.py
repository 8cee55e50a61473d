"""A fake Cortensor router: the contract in cortensor-router-api.md, with switchable faults.

Tests, local development and benchmarks point the portal at this instead of a real router
node. It is a plain WSGI app on gevent.pywsgi (no Django) so that it starts in a fraction of a
second and holds thousands of open SSE streams on a small machine: every request is a greenlet,
and all waiting is ``gevent.sleep``.

Run it with ``python -m inference.simulator --port 5010 [options]`` (or
``python manage.py run_router_sim``); ``--help`` lists the faults it can inject.

Besides the router routes, ``GET /_sim/requests`` returns the last completion requests it
received (path, Content-Type, Accept and body), so integration tests can check what the
portal actually forwarded, and ``GET /_sim/hold`` / ``GET /_sim/release`` hold every stream
after its first chunk until released, so a test can count how many streams a client keeps
open at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hmac
import itertools
import json
import math
import os
import re
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import WSGIHandler, WSGIServer

Environ = dict[str, Any]
Write = Callable[[bytes], None]
StartResponse = Callable[..., Write]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

DEFAULT_TOKEN = "default-dev-token"
MODEL = "cortensor-sim"
ERROR_SHAPES = ("error", "message", "detail")
# --hang: long enough to outlive any client timeout, short enough to be a finite number.
HANG_SECONDS = 24 * 3600
MAX_BODY_BYTES = 1 << 20
RECENT_REQUESTS = 100

_COMPLETIONS_PATH = re.compile(r"^/api/v[13]/completions(?:/([^/]+))?/?$")
_JSON_TYPE = ("Content-Type", "application/json")
_SSE_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]
_DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 5010
    latency_ms: int = 0
    chunk_delay_ms: int = 0
    chunks: int = 8
    error_rate: float = 0.0
    hang: bool = False
    drop_after: int | None = None
    no_usage: bool = False
    json_for_stream: bool = False
    sessions: tuple[int, ...] = (1,)
    token: str = DEFAULT_TOKEN
    interleave: bool = False
    no_done: bool = False
    body_only: bool = False
    path_only: bool = False
    error_shape: str = "error"
    access_log: bool = False
    status: int | None = None
    usage_tokens: int | None = None
    ignore_max_tokens: bool = False
    stream_seconds: float | None = None
    sse_for_json: bool = False


class DropConnection(Exception):
    """Raised by the app to make the server cut the connection without finishing the response.

    Only ``SimHandler`` knows about it; under another WSGI server it would surface as a 500.
    """


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _CompletionRequest:
    session_id: int
    prompt: str
    stream: bool
    max_tokens: int | None


@dataclass(frozen=True)
class _Plan:
    """Everything an answer needs, fixed before the first byte goes out."""

    completion_id: str
    task_id: int
    created: int
    pieces: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    reported_completion_tokens: int | None = None  # --usage-tokens: a lie about the count

    @property
    def usage(self) -> dict[str, int]:
        completion_tokens = self.reported_completion_tokens
        if completion_tokens is None:
            completion_tokens = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }


class _FailureSchedule:
    """Decides which completion requests fail under ``--error-rate``.

    A counter instead of a random draw keeps tests stable: request n fails when
    floor((n + 1) * rate) > floor(n * rate), so 1.0 fails all, 0.5 every second one.
    """

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._seen = 0

    def next_fails(self) -> bool:
        n = self._seen
        self._seen += 1
        return math.floor((n + 1) * self._rate) > math.floor(n * self._rate)


class _Tracked:
    """Wraps a response body so ``in_flight`` drops when the server is done with it.

    The server calls ``close()`` on every body, also when the client went away mid-stream.
    """

    __slots__ = ("_body", "_closed", "_on_close")

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.started_at = time.monotonic()
        self.requests_total = 0
        self.in_flight = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        self._task_ids = itertools.count(1)
        self._failures = _FailureSchedule(config.error_rate)
        self._sessions = frozenset(config.sessions)
        self._expected_auth = f"Bearer {config.token}".encode()
        self._get_routes: dict[str, Callable[[], dict[str, Any]]] = {
            "/api/v1/status": self._status,
            "/api/v1/info": self._info,
            "/api/v1/ping": lambda: {"status": "ok"},
            "/_sim/requests": lambda: {"requests": list(self.recent)},
            "/_sim/hold": self._hold,
            "/_sim/release": self._release,
        }
        # Streams pass their first chunk and then wait here while a test holds them, so it
        # can see how many a client keeps open at once without racing the chunks' timing.
        self._gate = gevent.event.Event()
        self._gate.set()

    # -- dispatch ---------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            self._authorize(environ)
            method = environ["REQUEST_METHOD"]
            path = environ.get("PATH_INFO", "")
            route = self._get_routes.get(path)
            if route is not None:
                if method != "GET":
                    raise _HTTPError(405, "method not allowed")
                return _json_response(start_response, 200, route())
            match = _COMPLETIONS_PATH.match(path)
            if match is None:
                raise _HTTPError(404, "not found")
            if method != "POST":
                raise _HTTPError(405, "method not allowed")
            return self._completion(environ, start_response, match.group(1))
        except _HTTPError as err:
            return _json_response(start_response, err.status, self._error_body(err.message))

    def _authorize(self, environ: Environ) -> None:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._expected_auth):
            raise _HTTPError(401, "invalid or missing router token")

    def _error_body(self, message: str) -> dict[str, Any]:
        # Real routers disagree on the error shape; --error-shape picks one of those seen.
        shape = self.config.error_shape
        if shape == "message":
            return {"message": message}
        if shape == "detail":
            return {"detail": message}
        return {"error": {"message": message}}

    # -- info routes ------------------------------------------------------------------------

    def _uptime(self) -> int:
        return int(time.monotonic() - self.started_at)

    def _status(self) -> dict[str, Any]:
        return {
            "active_sessions": len(self._sessions),
            "connected_miners": 3 * len(self._sessions),
            "cpu_usage": _cpu_usage_percent(),
            "memory_usage": _memory_usage_mb(),
            "uptime": self._uptime(),
            # Extras (not in the router contract) for tests and benchmarks.
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
        }

    def _info(self) -> dict[str, Any]:
        return {
            "name": "cortensor-router-sim",
            "version": "sim-1",
            "address": "0x" + "0" * 40,
            "active_sessions": len(self._sessions),
            "total_sessions": len(self._sessions),
            "node_stats": {
                "uptime": self._uptime(),
                "requests_total": self.requests_total,
                "in_flight": self.in_flight,
                "sessions": sorted(self._sessions),
            },
        }

    def _hold(self) -> dict[str, Any]:
        self._gate.clear()
        return {"held": True}

    def _release(self) -> dict[str, Any]:
        self._gate.set()
        return {"held": False}

    # -- completions ------------------------------------------------------------------------

    def _completion(
        self, environ: Environ, start_response: StartResponse, path_session: str | None
    ) -> Iterable[bytes]:
        self.requests_total += 1
        self.in_flight += 1
        try:
            request = self._parse_completion(environ, path_session)
            body = self._answer(request, start_response)
        except BaseException:
            self.in_flight -= 1
            raise
        return _Tracked(body, self._request_done)

    def _request_done(self) -> None:
        self.in_flight -= 1

    def _parse_completion(self, environ: Environ, path_session: str | None) -> _CompletionRequest:
        config = self.config
        # Some deployments answer only one of the two forms; clients retry the other on 404.
        if path_session is None and config.path_only:
            raise _HTTPError(404, "not found")
        if path_session is not None and config.body_only:
            raise _HTTPError(404, "not found")

        body = _read_json_object(environ)
        self.recent.append(
            {
                "path": environ.get("PATH_INFO", ""),
                "content_type": environ.get("CONTENT_TYPE", ""),
                "accept": environ.get("HTTP_ACCEPT", ""),
                "body": body,
            }
        )
        if config.access_log:
            # Which of the caller's requests this is (the portal sends its request id), so a
            # test can match what the router served with what was billed.
            print(f"completion received: {body.get('client_reference')}", file=sys.stderr)

        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise _HTTPError(400, "prompt is required and must be a string")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise _HTTPError(400, "max_tokens must be a positive integer")

        if path_session is None:
            if "session_id" not in body:
                raise _HTTPError(400, "session_id is required")
            session_id = _as_int(body["session_id"])
            if session_id is None:
                raise _HTTPError(400, "session_id must be an integer")
        else:
            session_id = _as_int(path_session)
        if session_id is None or session_id not in self._sessions:
            raise _HTTPError(404, "session not found")

        return _CompletionRequest(
            session_id=session_id,
            prompt=prompt,
            stream=bool(body.get("stream", False)),
            max_tokens=max_tokens,
        )

    def _answer(
        self, request: _CompletionRequest, start_response: StartResponse
    ) -> Iterable[bytes]:
        config = self.config
        if config.status is not None:
            raise _HTTPError(
                config.status, f"simulated answer {config.status} to session {request.session_id}"
            )
        if self._failures.next_fails():
            raise _HTTPError(503, "no miners available for this session")
        if config.hang:
            gevent.sleep(HANG_SECONDS)
        if config.latency_ms:
            gevent.sleep(config.latency_ms / 1000)

        plan = self._plan(request)
        if (request.stream and not config.json_for_stream) or config.sse_for_json:
            write = start_response(_status_line(200), list(_SSE_HEADERS))
            return self._stream(plan, write)
        if config.drop_after is not None:
            raise DropConnection
        if config.stream_seconds:
            return self._slow_json(start_response, self._completion_body(plan))
        return _json_response(start_response, 200, self._completion_body(plan))

    def _slow_json(self, start_response: StartResponse, payload: Any) -> Iterator[bytes]:
        """--stream-seconds for a JSON answer: the body trickles out over that many seconds,
        each piece well within any read timeout, so only a cap on the whole call stops it."""
        body = json.dumps(payload).encode()
        start_response(_status_line(200), [_JSON_TYPE])  # chunked: no Content-Length
        pieces = 10
        step = math.ceil(len(body) / pieces)
        delay = (self.config.stream_seconds or 0) / pieces
        for start in range(0, len(body), step):
            if start:
                gevent.sleep(delay)
            yield body[start : start + step]

    def _plan(self, request: _CompletionRequest) -> _Plan:
        count = self.config.chunks
        finish_reason = "stop"
        honour_max_tokens = not self.config.ignore_max_tokens
        if honour_max_tokens and request.max_tokens is not None and request.max_tokens < count:
            count = request.max_tokens
            finish_reason = "length"
        task_id = next(self._task_ids)
        return _Plan(
            completion_id=f"cmpl-sim-{task_id}",
            task_id=task_id,
            created=int(time.time()),
            pieces=tuple(f" word{i}" for i in range(count)),
            finish_reason=finish_reason,
            prompt_tokens=max(1, len(request.prompt) // 4),
            reported_completion_tokens=self.config.usage_tokens,
        )

    def _completion_body(self, plan: _Plan) -> dict[str, Any]:
        text = "".join(plan.pieces)
        body = _chunk(plan.completion_id, plan.task_id, plan.created, text, plan.finish_reason)
        if not self.config.no_usage:
            body["usage"] = plan.usage
        return body

    def _stream(self, plan: _Plan, write: Write) -> Iterator[bytes]:
        config = self.config
        delay = config.chunk_delay_ms / 1000
        if config.stream_seconds:
            # The chunks spread over the whole duration (the last one at its end).
            delay = config.stream_seconds / max(1, len(plan.pieces) - 1)
        last = len(plan.pieces) - 1
        # Answers no longer than --drop-after finish normally: the router "died" too late.
        drop_at = config.drop_after if config.drop_after is not None else -1
        other_task = next(self._task_ids) if config.interleave else 0

        for i, piece in enumerate(plan.pieces):
            if i == 1:
                self._gate.wait()
            if i and delay:
                gevent.sleep(delay)
            if i == drop_at:
                if i == 0:
                    # Headers only go out with the first body bytes; flush them so the client
                    # sees an accepted 200 stream that then breaks.
                    write(b"")
                raise DropConnection
            finish = plan.finish_reason if i == last else None
            yield _event(_chunk(plan.completion_id, plan.task_id, plan.created, piece, finish))
            if config.interleave and i < last:
                # A second task's chunks in between; it finishes before the first one does, so
                # a client that stops at any finish_reason or mixes ids gets it wrong.
                other_finish = "stop" if i == last - 1 else None
                other_id = f"cmpl-sim-{other_task}"
                yield _event(_chunk(other_id, other_task, plan.created, f" other{i}", other_finish))

        if not config.no_usage:
            usage = _chunk(plan.completion_id, plan.task_id, plan.created, "")
            usage["choices"] = []
            usage["usage"] = plan.usage
            yield _event(usage)
        if not config.no_done:
            yield _DONE_EVENT


# -- small helpers ----------------------------------------------------------------------------


def _chunk(
    completion_id: str, task_id: int, created: int, text: str, finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": MODEL,
        "task_id": task_id,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # --status may name a code without a standard phrase (e.g. 499)
        phrase = "Error"
    return f"{status} {phrase}"


def _json_response(start_response: StartResponse, status: int, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(_status_line(status), [_JSON_TYPE, ("Content-Length", str(len(body)))])
    return [body]


def _read_json_object(environ: Environ) -> dict[str, Any]:
    raw = environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _HTTPError(413, "request body too large")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _HTTPError(400, "request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise _HTTPError(400, "request body must be a JSON object")
    return body


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cpu_usage_percent() -> float:
    load1, _, _ = os.getloadavg()
    return round(min(100.0, 100.0 * load1 / (os.cpu_count() or 1)), 1)


def _memory_usage_mb() -> float:
    # ru_maxrss is in KiB on Linux: good enough for a number that looks alive.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build_app(config: SimConfig) -> WSGIApp:
    """The simulator as a WSGI app; serve it with ``SimHandler`` so ``--drop-after`` works."""
    return _Simulator(config)


# -- server -----------------------------------------------------------------------------------


class SimHandler(WSGIHandler):
    """gevent's handler, quiet about the disconnects a load test causes on purpose."""

    ignored_socket_errors = (
        *WSGIHandler.ignored_socket_errors,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
    )

    def __init__(self, sock, address, server, rfile=None):
        # Like nginx in front of a real router: no Nagle delay on small writes (without it a
        # keep-alive client waits ~40 ms per request for the delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        if t is not None and issubclass(t, DropConnection):
            # No 500, no traceback, no final chunk: the connection just closes.
            self.close_connection = True
            return
        super().handle_error(t, v, tb)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _error_status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError("must be an HTTP error status, 400 to 599")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be a number of seconds > 0")
    return value


def _session_list(text: str) -> tuple[int, ...]:
    try:
        sessions = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("must be a comma list of integers, e.g. 1,2") from exc
    if not sessions:
        raise argparse.ArgumentTypeError("needs at least one session id")
    return sessions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options; shared with the ``run_router_sim`` management command."""
    defaults = SimConfig()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument(
        "--token", default=defaults.token, help="router key expected as 'Bearer <token>'"
    )
    parser.add_argument(
        "--sessions",
        type=_session_list,
        default=defaults.sessions,
        help="comma list of session ids that exist (others: 404)",
    )
    parser.add_argument(
        "--chunks",
        type=_positive_int,
        default=defaults.chunks,
        help="content chunks (one token each) per answer; max_tokens caps it",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative_int,
        default=defaults.latency_ms,
        help="wait before the answer / the first token",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=_non_negative_int,
        default=defaults.chunk_delay_ms,
        help="wait between stream chunks",
    )
    parser.add_argument(
        "--error-rate",
        type=_rate,
        default=defaults.error_rate,
        help="fraction of completions answered 503, spread evenly (0.5: every second one)",
    )
    parser.add_argument(
        "--hang", action="store_true", help="completions never answer; status still does"
    )
    parser.add_argument(
        "--drop-after",
        type=_non_negative_int,
        default=None,
        help="cut streams after N content chunks; cut non-stream requests without an answer",
    )
    parser.add_argument("--no-usage", action="store_true", help="omit usage everywhere")
    parser.add_argument(
        "--json-for-stream",
        action="store_true",
        help="answer stream:true with a plain JSON body",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="interleave a second task id's chunks into streams",
    )
    parser.add_argument("--no-done", action="store_true", help="end streams without [DONE]")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--body-only", action="store_true", help="path-form completions answer 404")
    form.add_argument("--path-only", action="store_true", help="body-form completions answer 404")
    parser.add_argument("--error-shape", choices=ERROR_SHAPES, default=defaults.error_shape)
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--status",
        type=_error_status,
        default=None,
        help="answer every completion with this HTTP status and a JSON error body",
    )
    parser.add_argument(
        "--usage-tokens",
        type=_non_negative_int,
        default=None,
        help="report usage.completion_tokens = N whatever was sent (e.g. 1099511627776)",
    )
    parser.add_argument(
        "--ignore-max-tokens",
        action="store_true",
        help="send all --chunks tokens even when max_tokens asked for fewer",
    )
    parser.add_argument(
        "--sse-for-json",
        action="store_true",
        help="answer stream:false with an SSE stream (the opposite of --json-for-stream)",
    )
    parser.add_argument(
        "--stream-seconds",
        type=_positive_seconds,
        default=None,
        help="streams spread their chunks over S seconds; JSON answers trickle over S seconds",
    )


def config_from_options(options: dict[str, Any]) -> SimConfig:
    """Build a SimConfig from parsed options, ignoring keys that are not SimConfig fields."""
    fields = SimConfig.__dataclass_fields__
    return SimConfig(**{key: value for key, value in options.items() if key in fields})


def parse_args(argv: Sequence[str] | None) -> SimConfig:
    parser = argparse.ArgumentParser(
        prog="python -m inference.simulator", description="Fake Cortensor router."
    )
    add_arguments(parser)
    return config_from_options(vars(parser.parse_args(argv)))


def serve(config: SimConfig) -> None:
    """Serve until killed. Uses gevent primitives only, so it needs no monkey-patching."""
    _raise_open_files_limit()
    server = WSGIServer(
        (config.host, config.port),
        build_app(config),
        handler_class=SimHandler,
        log=sys.stderr if config.access_log else None,
        # Benchmarks open connections in bursts; let the kernel queue them.
        backlog=4096,
    )
    options = {k: v for k, v in asdict(config).items() if k not in ("host", "port", "token")}
    print(
        f"router simulator listening on http://{config.host}:{config.port} {options}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(timeout=1)


def _raise_open_files_limit() -> None:
    # Each open stream is a socket; the usual soft limit of 1024 caps a benchmark far too early.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # Best effort: without it the simulator still works, it just holds fewer streams.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    # Patched here, not at import: importing this module must not change the importer's world.
    from gevent import monkey

    monkey.patch_all()
    serve(config)


if __name__ == "__main__":
    main()
