"""Talking to routers: a pooled HTTP client per worker, failover before the first byte,
and a lenient reader for the router's answers and streams.

The client is the portal's own (inference/router_http.py): urllib3 and http.client were most
of the router call's CPU, and requests before them half again (BENCHMARKS.md)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

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
from inference import balancer
from inference.router_api import api_for
from inference.router_http import RouterClient, RouterResponse

log = logging.getLogger(__name__)

MAX_TRIES = 3
# The router says the request itself is wrong (too long, a bad parameter): the customer's to
# fix. Any other error status says the router did not take the work, so another one may.
REQUEST_REFUSED = {400, 413, 422}
USER_AGENT = "cortensor-portal"
_encoder = json.JSONEncoder(separators=(",", ":"))

_pool: RouterClient | None = None


def pool() -> RouterClient:
    """One client per process: connections to routers are reused across requests. It never
    sends a request twice: open_completion decides what is retried."""
    global _pool
    if _pool is None:
        _pool = RouterClient(user_agent=USER_AGENT)
    return _pool


class _NotStarted(Exception):
    """The router did not take the work (no connection, or an error status): safe to send it
    to another router."""


@dataclass(slots=True)
class Upstream:
    router: RouterInfo
    response: RouterResponse
    deadline: float  # the call's total-time cap (monotonic), for reading the answer too

    def close(self) -> None:
        """End the router's answer and free its connection (back to the pool if the answer
        was read to its end, else closed). Never raises.

        A stream's answer is read on another greenlet (inference.services._pump), which may be
        blocked on the router's socket when the stream ends on the client side (a client cut
        off after the write timeout): the response shuts the socket down before it closes it,
        so the router sees its connection end and the reader wakes."""
        try:
            self.response.close()
        finally:
            balancer.release(self.router.id)


def _post(router: RouterInfo, url: str, body: bytes, stream: bool, read_timeout: float):
    started = time.monotonic()  # the upstream latency metric, failed attempts included
    result = "error"
    try:
        response = pool().request(
            "POST",
            url,
            body=body,
            headers={
                "Authorization": f"Bearer {router.token}",
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if stream else "application/json",
            },
            connect_timeout=router.connect_timeout,
            read_timeout=read_timeout,
            preload_content=False,
        )
        result = str(response.status)
        return response
    finally:
        metrics.UPSTREAM_LATENCY.labels(str(router.id), result).observe(time.monotonic() - started)


def _open_one(
    router: RouterInfo, model: ModelInfo, payload: dict, stream: bool, deadline: float
) -> RouterResponse:
    api = api_for(router.api_version)
    body_url, path_url = api.completion_urls(router.base_url, router.session_id)
    read_timeout = router.read_timeout or float(model.request_timeout)
    if not stream:
        # The whole call has a deadline; a stream's reads keep the usual timeout (its total
        # time is settings.STREAM_MAX_SECONDS).
        read_timeout = max(0.001, min(read_timeout, deadline - time.monotonic()))
    try:
        body = _encoder.encode(payload).encode()
        response = _post(router, body_url, body, stream, read_timeout)
        if response.status == 404:
            # Some deployments answer only the path form (or only the body form).
            response.close()
            response = _post(router, path_url, body, stream, read_timeout)
    except (ConnectTimeoutError, SSLError) as exc:  # NewConnectionError too: nothing was sent
        raise _NotStarted(exc.__class__.__name__) from None
    # A connection that broke after the request went out (ProtocolError) is not caught here:
    # the router may be generating already, and sending it again would run it twice.
    if response.status >= 400 and response.status not in REQUEST_REFUSED:
        response.close()
        raise _NotStarted(f"HTTP {response.status}")
    return response


def _request_refused(router: RouterInfo, response: RouterResponse) -> InvalidRequest:
    """A router's 400/413/422 as the customer's 400. The router's own words stay in our log
    (status only): they can name sessions, URLs or miners, which customers never see."""
    status = response.status
    response.close()
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


def is_event_stream(response: RouterResponse) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def _chunks(response: RouterResponse) -> Iterator[bytes]:
    """Bytes as the router sends them (not a fixed read size, which would hold SSE back). The
    connection goes back to the pool when the answer was read to its end."""
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


_decode = json.JSONDecoder().raw_decode


def _event_json(data: bytes) -> object:
    """json.loads(data) in about half its time for the usual event (an object in UTF-8):
    json.loads on bytes guesses the encoding, decodes, and scans for whitespace around the
    value (`data` has none: it was stripped). Anything else goes to json.loads itself."""
    if data[:1] != b"{" or data[1:2] == b"\x00":  # not UTF-8 (json.loads tells UTF-16 so)
        return json.loads(data)
    text = data.decode("utf-8", "surrogatepass")  # what json.loads decodes UTF-8 with
    obj, end = _decode(text)
    if end != len(text):
        raise ValueError("extra data after the event's JSON")
    return obj


def iter_stream(response: RouterResponse, deadline: float | None = None) -> Iterator[StreamEvent]:
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
                    obj = _event_json(data)
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
