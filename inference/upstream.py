"""Talking to routers: a pooled HTTP client per worker, failover before the first byte,
and a lenient reader for the router's answers and streams.

urllib3 directly rather than requests: requests' session merging, hooks and cookie jar were
about half of the router call's cost on every request (BENCHMARKS.md), and nothing here needs
them (no cookies, no redirects, no proxies from the environment)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from django.conf import settings
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    ReadTimeoutError,
    SSLError,
)

from catalog.routing import ModelInfo, RouterInfo
from core import metrics
from core.errors import InvalidRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from core.sockets import readable_now
from inference import balancer
from inference.router_api import api_for

log = logging.getLogger(__name__)

MAX_TRIES = 3
# The router says the request itself is wrong (too long, a bad parameter): the customer's to
# fix. Any other error status says the router did not take the work, so another one may.
REQUEST_REFUSED = {400, 413, 422}

_pool: urllib3.PoolManager | None = None


def pool() -> urllib3.PoolManager:
    """One pool per process: connections to routers are reused across requests. retries=False:
    urllib3 must never send a completion twice; open_completion decides what is retried."""
    global _pool
    if _pool is None:
        _pool = urllib3.PoolManager(num_pools=64, maxsize=2048, block=False, retries=False)
        _pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return _pool


class _RouterConnection(urllib3.connection.HTTPConnection):
    """urllib3's connection to a router, with two changes (HTTP and HTTPS alike).

    urllib3 asks whether a pooled connection is still usable (nothing to read, not closed by
    the router) before each request on it: here the same question is asked of the operating
    system's poll rather than gevent's (core/sockets.py).

    A request's headers are held back and sent with the first bytes of its body, in one send:
    http.client sends the headers, then the body, each a packet and a wake-up of the router
    on a socket without Nagle's delay. What `request` did not send them with (no body) is
    sent alone when it returns; if it raises, the request was not sent and they are dropped."""

    _held = b""
    _holding = False

    @property
    def is_connected(self) -> bool:
        return self.sock is not None and not readable_now(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._held, self._holding = b"", True
        try:
            super().request(*args, **kwargs)
        finally:
            self._holding = False
        held, self._held = self._held, b""
        if held:
            super().send(held)

    def send(self, data: Any) -> None:
        if self._holding:  # the request's first send: its headers
            self._held, self._holding = bytes(data), False
            return
        held, self._held = self._held, b""
        super().send(held + data if held else data)


class _HTTPConnection(_RouterConnection):
    pass


class _HTTPSConnection(_RouterConnection, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _NotStarted(Exception):
    """The router did not take the work (no connection, or an error status): safe to send it
    to another router."""


@dataclass(slots=True)
class Upstream:
    router: RouterInfo
    response: urllib3.BaseHTTPResponse
    deadline: float  # the call's total-time cap (monotonic), for reading the answer too

    def close(self) -> None:
        """End the router's answer and free its connection. Never raises.

        A stream's answer is read on another greenlet (inference.services._pump), which may be
        blocked inside the response's buffered socket reader when the stream ends on the client
        side (a client cut off after the write timeout): closing that reader from here then
        raises ("reentrant call inside BufferedReader") and would leave the router generating
        into an open connection. So the socket is shut down first, which works from any
        greenlet: the router sees its connection end and the reader wakes to EOF."""
        try:
            _shutdown(self.response)
            _discard(self.response)
        except Exception as exc:
            # Shut down already: the reader ends at EOF and its socket is closed with it.
            log.info(
                "upstream response ended by shutdown (%s)",
                exc.__class__.__name__,
                extra={"router_id": self.router.id},
            )
        finally:
            balancer.release(self.router.id)


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Shut the response's connection down both ways (not close: another greenlet may be
    reading it)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response we will not read to the end (its connection is not reused)."""
    try:
        response.close()
    finally:
        response.release_conn()


def _post(router: RouterInfo, url: str, payload: dict, stream: bool, read_timeout: float):
    started = time.monotonic()  # the upstream latency metric, failed attempts included
    result = "error"
    try:
        response = pool().request(
            "POST",
            url,
            body=json.dumps(payload).encode(),
            headers={
                "Authorization": f"Bearer {router.token}",
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if stream else "application/json",
            },
            timeout=urllib3.Timeout(connect=router.connect_timeout, read=read_timeout),
            preload_content=False,
            redirect=False,
        )
        result = str(response.status)
        return response
    finally:
        metrics.UPSTREAM_LATENCY.labels(str(router.id), result).observe(time.monotonic() - started)


def _open_one(
    router: RouterInfo, model: ModelInfo, payload: dict, stream: bool, deadline: float
) -> urllib3.BaseHTTPResponse:
    api = api_for(router.api_version)
    body_url, path_url = api.completion_urls(router.base_url, router.session_id)
    read_timeout = router.read_timeout or float(model.request_timeout)
    if not stream:
        # The whole call has a deadline; a stream's reads keep the usual timeout (its total
        # time is settings.STREAM_MAX_SECONDS).
        read_timeout = max(0.001, min(read_timeout, deadline - time.monotonic()))
    try:
        response = _post(router, body_url, payload, stream, read_timeout)
        if response.status == 404:
            # Some deployments answer only the path form (or only the body form).
            _discard(response)
            response = _post(router, path_url, payload, stream, read_timeout)
    except (ConnectTimeoutError, SSLError) as exc:  # NewConnectionError too: nothing was sent
        raise _NotStarted(exc.__class__.__name__) from None
    # A connection that broke after the request went out (ProtocolError) is not caught here:
    # the router may be generating already, and sending it again would run it twice.
    if response.status >= 400 and response.status not in REQUEST_REFUSED:
        _discard(response)
        raise _NotStarted(f"HTTP {response.status}")
    return response


def _request_refused(router: RouterInfo, response: urllib3.BaseHTTPResponse) -> InvalidRequest:
    """A router's 400/413/422 as the customer's 400. The router's own words stay in our log
    (status only): they can name sessions, URLs or miners, which customers never see."""
    status = response.status
    _discard(response)
    log.info("router refused the request", extra={"router_id": router.id, "status": status})
    if status == 413:
        return InvalidRequest(
            "The request is too large for this model. Shorten the prompt or lower max_tokens."
        )
    return InvalidRequest(
        "The model could not process this request. Check the prompt and the sampling "
        "parameters (max_tokens, stop, temperature) and send a corrected request."
    )


def open_completion(
    *, routers: list[RouterInfo], model: ModelInfo, payload_for, stream: bool
) -> Upstream:
    """Send to a router of the pool. Another router is tried (within MAX_TRIES and the model's
    timeout) only when the first cannot have started the work: no connection, or an error
    status other than the ones about the request. Every pick gets a verdict for the breaker."""
    deadline = time.monotonic() + model.request_timeout
    tried: set[int] = set()
    last_error = None
    for _ in range(MAX_TRIES):
        if time.monotonic() >= deadline:
            break
        router = balancer.pick(routers, tried)
        if router is None:
            break
        tried.add(router.id)
        try:
            response = _open_one(router, model, payload_for(router), stream, deadline)
        except _NotStarted as exc:
            _failed(router)
            last_error = str(exc)
            log.warning(
                "router failed before the first byte, trying another",
                extra={"router_id": router.id, "reason": last_error},
            )
            continue
        except ReadTimeoutError:
            _failed(router)
            raise UpstreamTimeout(
                "The model did not answer in time. Retry, or lower max_tokens."
            ) from None
        except (HTTPError, OSError) as exc:
            _failed(router)
            log.warning(
                "router connection broke after the request was sent",
                extra={"router_id": router.id, "reason": exc.__class__.__name__},
            )
            raise UpstreamError("The upstream model server failed. Retry in a moment.") from None
        except BaseException:
            _failed(router)  # whatever it was, the breaker gets its verdict
            raise
        # The router answered: alive, whether or not it liked the request.
        balancer.record_success(router.id)
        if response.status in REQUEST_REFUSED:
            balancer.release(router.id)
            raise _request_refused(router, response)
        return Upstream(router=router, response=response, deadline=deadline)
    if not tried:
        raise UpstreamUnavailable(
            "No capacity is available for this model right now. Retry in a few seconds."
        )
    log.warning("every router tried failed", extra={"tried": len(tried), "reason": last_error})
    raise UpstreamUnavailable(
        "The model's servers are unavailable right now. Retry in a few seconds."
    )


def _failed(router: RouterInfo) -> None:
    balancer.record_failure(router.id)
    balancer.release(router.id)


# --- reading answers ----------------------------------------------------------------------------
# Nothing a router sends is trusted to be small or quick: a JSON answer is read up to
# settings.UPSTREAM_MAX_BYTES and within the call's deadline, an SSE event up to the same size.
# Usage counts are passed on as the router sent them; inference.relay decides what to believe.


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: object  # as reported: checked by inference.relay before billing
    completion_tokens: object


class AnswerTooLarge(UpstreamError):
    def __init__(self) -> None:
        super().__init__("The upstream model server sent an answer too large to relay.")


def _text_of(choice: dict) -> str:
    text = choice.get("text")
    if text is None and isinstance(choice.get("message"), dict):
        text = choice["message"].get("content")
    if text is None and isinstance(choice.get("delta"), dict):
        text = choice["delta"].get("content")
    return text if isinstance(text, str) else ""


def _usage_of(data: dict) -> tuple[object, object]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None, None
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def parse_completion_json(data) -> Completion:
    if not isinstance(data, dict):
        raise UpstreamError("The upstream model server sent an answer we could not read.")
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        text, finish = _text_of(choices[0]), choices[0].get("finish_reason")
    elif isinstance(data.get("output"), str):
        text, finish = data["output"], "stop"
    else:
        raise UpstreamError("The upstream model server sent an answer we could not read.")
    prompt, completion = _usage_of(data)
    return Completion(
        text=text,
        finish_reason=finish if isinstance(finish, str) and finish else "stop",
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def _past(deadline: float) -> bool:
    return time.monotonic() >= deadline


def read_completion(upstream: Upstream) -> Completion:
    """A JSON answer, read as it arrives, refused past UPSTREAM_MAX_BYTES or the deadline."""
    limit = settings.UPSTREAM_MAX_BYTES
    body = bytearray()
    try:
        for chunk in _chunks(upstream.response):
            body += chunk
            if len(body) > limit:
                raise AnswerTooLarge()
            if _past(upstream.deadline):
                raise ReadTimeoutError(None, None, "the call's deadline")  # type: ignore[arg-type]
        upstream.response.release_conn()  # read to the end: the connection is reusable
        data = json.loads(body)
    except ReadTimeoutError:
        raise UpstreamTimeout(
            "The model did not answer in time. Retry, or lower max_tokens."
        ) from None
    except (ValueError, HTTPError, OSError):
        raise UpstreamError("The upstream model server sent an answer we could not read.") from None
    return parse_completion_json(data)


@dataclass(slots=True)
class StreamEvent:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: object = None
    completion_tokens: object = None
    whole: bool = False  # the router's whole answer at once (JSON to a stream request)


class StreamBroken(Exception):
    """The router's stream ended before a finish_reason (dropped connection or bad data)."""


def is_event_stream(response: urllib3.BaseHTTPResponse) -> bool:
    return "text/event-stream" in response.headers.get("Content-Type", "")


def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Bytes as the router sends them (not a fixed read size, which would hold SSE back)."""
    if response.chunked and response.supports_chunked_reads():  # type: ignore[attr-defined]
        yield from response.read_chunked(decode_content=True)
        return
    while True:
        data = response.read1(65536)
        if not data:
            return
        yield data


class LineSplitter:
    """Bytes in, complete lines out. Each byte is looked at once, however the router cuts
    its chunks (a long line in many small chunks must not be rescanned on every chunk), and a
    line may not grow past `limit` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # the buffer's first bytes hold no newline

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        lines = []
        start = 0
        newline = buffer.find(b"\n", self._scanned)
        while newline >= 0:
            lines.append(bytes(buffer[start:newline]))
            start = newline + 1
            newline = buffer.find(b"\n", start)
        del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > self.limit:
            raise StreamBroken("an event over the size limit")
        return lines


def iter_stream(
    response: urllib3.BaseHTTPResponse, deadline: float | None = None
) -> Iterator[StreamEvent]:
    """Router SSE -> events. Survives: chunks of a second task id (kept to the first id's),
    a usage-only final chunk, a missing [DONE] after a finish_reason. Raises StreamBroken on
    EOF before a finish_reason, on a broken connection or an oversized event; UpstreamTimeout
    past the deadline, if one is given."""
    first_id = None
    finished = False
    lines = LineSplitter(settings.UPSTREAM_MAX_BYTES)
    try:
        for chunk in _chunks(response):
            if deadline is not None and _past(deadline):
                raise UpstreamTimeout("The model did not finish its answer in time.")
            for line in lines.feed(chunk):
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # comments, blank separators, event:/id: lines
                data = line[5:].strip()
                if data == b"[DONE]":
                    if not finished:
                        raise StreamBroken("[DONE] before a finish_reason")
                    return
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(obj, dict):
                    continue
                ident = obj.get("task_id", obj.get("id"))
                if first_id is None:
                    first_id = ident
                elif ident is not None and ident != first_id:
                    continue  # an interleaved second task: keep the first one's
                event = StreamEvent()
                event.prompt_tokens, event.completion_tokens = _usage_of(obj)
                choices = obj.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    event.text = _text_of(choices[0])
                    finish = choices[0].get("finish_reason")
                    event.finish_reason = finish if isinstance(finish, str) and finish else None
                    if event.finish_reason:
                        finished = True
                if event.text or event.finish_reason or event.prompt_tokens is not None:
                    yield event
    except ReadTimeoutError:
        raise UpstreamTimeout("The model stopped sending in time.") from None
    except (HTTPError, OSError) as exc:
        raise StreamBroken(exc.__class__.__name__) from None
    if not finished:
        raise StreamBroken("EOF before a finish_reason")
