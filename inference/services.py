"""The completion pipeline: policy, limits, routing, forwarding, translation and metering.

One request, start to end:
  1. (DRF) authenticate the key from the cache            apikeys.authentication
  2. validate the body, resolve the model, check policy    validation, catalog.routing
  3. admit against the limits in one Redis round trip      metering.limits
  4. forward to a router of the model's pool, failing over before the first byte
  5. translate to OpenAI's or Anthropic's JSON or SSE      faces (openai_format, anthropic_format)
  6. settle the limits and write one usage record when the request ends, however it ends
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpResponseBase, JsonResponse, StreamingHttpResponse

from apikeys.services import KeyPrincipal
from catalog.routing import ModelInfo, PlanInfo, RouterInfo, routing_table
from core import metrics
from core.errors import (
    ApiError,
    InvalidRequest,
    ModelNotFound,
    QuotaExceeded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    to_api_error,
)
from inference import chat_templates, upstream
from inference.faces import Face, OpenAIFace, StreamWriter
from inference.relay import Relay, bill
from inference.router_api import api_for
from inference.tokens import estimate_tokens
from inference.validation import CompletionRequest
from metering.lifecycle import MeteredRequest, Outcome, Usage, usage_refused
from metering.limits import Admission

log = logging.getLogger(__name__)


def outcome_for(error: ApiError) -> str:
    if isinstance(error, RateLimited | QuotaExceeded):
        return Outcome.RATE_LIMITED
    if isinstance(error, UpstreamTimeout):
        return Outcome.TIMEOUT
    if isinstance(error, UpstreamError | UpstreamUnavailable) or error.status >= 500:
        return Outcome.UPSTREAM_ERROR
    return Outcome.CLIENT_ERROR


@dataclass(slots=True)
class Call:
    """One API call: its usage record in the making, when it started, and once admitted, the
    metering lifecycle that writes and settles it (metering.lifecycle)."""

    usage: Usage
    started: float
    face: Face
    metered: MeteredRequest | None = None

    @classmethod
    def begin(cls, *, request_id: str, principal: KeyPrincipal, face: Face) -> Call:
        return cls(
            usage=Usage(
                request_id=request_id,
                user_id=principal.owner_id,
                key_id=principal.key_id,
                org_id=principal.org_id,
                endpoint=face.endpoint,
            ),
            started=time.monotonic(),
            face=face,
        )

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def admit(
        self,
        *,
        principal: KeyPrincipal,
        plan: PlanInfo | None,
        reserve_tokens: int,
        prompt_tokens: int,
    ) -> Admission:
        self.metered = MeteredRequest.admit(
            usage=self.usage,
            principal=principal,
            plan=plan,
            reserve_tokens=reserve_tokens,
            prompt_tokens=prompt_tokens,
        )
        return self.metered.admission

    def keep_alive(self) -> None:
        """From a stream's loop: keeps a long stream's slot and journal entry alive."""
        if self.metered is not None:
            self.metered.keep_alive()

    def release_slot(self) -> None:
        """The client is about to have its whole answer: free the concurrency slot."""
        if self.metered is not None:
            self.metered.release()

    def end(self, *, outcome: str, status: int, error_code: str = "") -> bool:
        """Meter the end of the call. False only for a refused call over its key's rate of
        refused calls: nothing was recorded, and the answer must be a 429."""
        self.usage.outcome = outcome
        self.usage.http_status = status
        self.usage.error_code = error_code
        self.usage.latency_ms = self.elapsed_ms()
        u = self.usage  # the model is "-" in metrics until the catalog resolved it
        metrics.request_ended(
            model=u.model if u.pool else "-",
            endpoint=u.endpoint,
            outcome=outcome,
            streamed=u.streamed,
            seconds=time.monotonic() - self.started,
            ttfb_ms=u.ttfb_ms,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
        )
        if self.metered is not None:
            self.metered.finish()
            return True
        return usage_refused(self.usage)

    def fail(self, error: ApiError, headers: dict[str, str] | None = None) -> JsonResponse:
        outcome = outcome_for(error)
        if not self.end(outcome=outcome, status=error.status, error_code=error.record_code):
            error = RateLimited(
                "Too many refused requests from this API key; fix the requests before "
                "retrying. Retry after 60s.",
                headers={"Retry-After": "60"},
            )
        response = self.face.error_response(error, request_id=self.usage.request_id)
        for name, value in self.face.headers(headers or {}).items():
            response.setdefault(name, value)
        return response


def resolve_model(principal: KeyPrincipal, model_id: str) -> tuple[ModelInfo, PlanInfo | None]:
    table = routing_table()
    plan = table.plan_for(principal.plan_id)
    model = table.models.get(model_id)
    if model is None or not table.model_allowed(model, plan, principal.allowed_models):
        raise ModelNotFound(
            f"The model '{model_id}' does not exist or you do not have access "
            "to it. GET /v1/models lists yours.",
            param="model",
        )
    return model, plan


def _prompt_for(creq: CompletionRequest, model: ModelInfo) -> str:
    if creq.messages is not None:
        return chat_templates.render(model.chat_template, creq.messages)
    return creq.prompt or ""


def count_prompt_tokens(*, principal: KeyPrincipal, creq: CompletionRequest) -> int:
    """The prompt's tokens as admission counts them (the model's template, then the estimate);
    raises ModelNotFound like a completion would."""
    model, _ = resolve_model(principal, creq.model)
    return estimate_tokens(_prompt_for(creq, model))


# What the views pass: the body's parser (chat or legacy completion) or the face it belongs
# to, and a getter for the body, which DRF parses on first access (so a malformed body is an
# error of this call, metered).
BodyParser = Callable[[Any], CompletionRequest]
BodyGetter = Callable[[], Any]


def completion_serve(
    *,
    request_id: str,
    principal: KeyPrincipal,
    body_getter: BodyGetter,
    creq_parse: BodyParser | None = None,
    face: Face | None = None,
    client_socket: socket.socket | None = None,
    on_routed: Callable[[RouterInfo, int], None] | None = None,
) -> HttpResponseBase:
    """Handle one chat, legacy completion or Anthropic message request; always returns a
    response. OpenAI's views pass their parser, others their `face`. `client_socket`
    (gunicorn's, when served by it) gets a send timeout while streaming; `on_routed` (staff's
    "try this model") hears which router took it and its TTFB in ms."""
    if face is None:
        assert creq_parse is not None
        face = OpenAIFace(creq_parse)
    call = Call.begin(request_id=request_id, principal=principal, face=face)
    try:
        ready = _prepare(call, principal=principal, creq_parse=face.parse, body_getter=body_getter)
    except ApiError as error:
        return call.fail(error)
    except Exception as exc:  # DRF parse errors and the like: bad input, never a 500
        bad_input = to_api_error(exc)
        if bad_input is None:
            raise
        return call.fail(bad_input)

    try:
        admission = call.admit(
            principal=principal,
            plan=ready.plan,
            reserve_tokens=ready.prompt_tokens + ready.max_tokens,
            prompt_tokens=ready.prompt_tokens,
        )
    except ApiError as error:
        if ready.creq.sampling.max_tokens is None and error.message.startswith("Request too large"):
            error.message += (
                f" No max_tokens was sent, so it reserves {ready.max_tokens} output tokens (what "
                "fits the context after the prompt, up to the model's maximum): send a smaller "
                "max_tokens."
            )
        return call.fail(error, headers=getattr(error, "headers", None))

    try:
        up = _open_upstream(ready, request_id=request_id)
    except ApiError as error:
        return call.fail(error, headers=admission.headers)

    call.usage.router_id = up.router.id
    call.usage.ttfb_ms = call.elapsed_ms()
    if on_routed is not None:
        on_routed(up.router, call.usage.ttfb_ms)
    creq = ready.creq
    answer = _Answer(
        call=call,
        creq=creq,
        model=ready.model,
        up=up,
        admission=admission,
        prompt_estimate=ready.prompt_tokens,
        max_tokens=ready.max_tokens,
        ident=face.ident(request_id),
        created=int(time.time()),
    )
    if not creq.stream:
        return _answer_json(answer)
    return _answer_stream(answer, client_socket)


@dataclass(slots=True)
class _Prepared:
    """A valid request for a model the key may call, with its prompt rendered and the routers
    that may take it: everything admission and forwarding need."""

    creq: CompletionRequest
    model: ModelInfo
    plan: PlanInfo | None
    prompt: str
    prompt_tokens: int
    max_tokens: int
    routers: list[RouterInfo]


def _prepare(
    call: Call, *, principal: KeyPrincipal, creq_parse: BodyParser, body_getter: BodyGetter
) -> _Prepared:
    """Validate the body, resolve the model and check the token budget; raises ApiError."""
    creq: CompletionRequest = creq_parse(body_getter())
    call.usage.streamed = creq.stream
    call.usage.end_user = creq.sampling.user
    model, plan = resolve_model(principal, creq.model)
    call.usage.model = model.public_id  # only once resolved: never what a client typed
    call.usage.pool = model.pool_name
    requested = creq.sampling.max_tokens
    if requested is not None and requested > model.max_tokens:
        raise InvalidRequest(
            f"max_tokens is {requested}; this model allows at most {model.max_tokens}.",
            param="max_tokens",
        )
    prompt = _prompt_for(creq, model)
    prompt_tokens = estimate_tokens(prompt)
    max_tokens = requested or default_max_tokens(model, prompt_tokens)
    if prompt_tokens + max_tokens > model.context_length:
        raise InvalidRequest(
            f"This model's context is {model.context_length} tokens; your prompt (~"
            f"{prompt_tokens}) plus max_tokens ({max_tokens}) is over it.",
            param="messages" if creq.messages is not None else "prompt",
            code="context_length_exceeded",
        )
    routers = routing_table().routers.get(model.pool_id, [])
    if not routers:
        raise UpstreamUnavailable("No capacity is available for this model right now.")
    return _Prepared(
        creq=creq,
        model=model,
        plan=plan,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        routers=routers,
    )


def default_max_tokens(model: ModelInfo, prompt_tokens: int) -> int:
    """A request without max_tokens may use what fits the context after its prompt, up to the
    model's max_tokens (or the catalog's lower default), as OpenAI does; admission reserves
    the same. At least 1, so a prompt that fills the context is refused as too long."""
    ceiling = model.max_tokens
    if model.default_max_tokens is not None:
        ceiling = min(ceiling, model.default_max_tokens)
    return max(1, min(ceiling, model.context_length - prompt_tokens))


def _open_upstream(ready: _Prepared, *, request_id: str) -> upstream.Upstream:
    """Send the request to a router of the model's pool, failing over before the first byte."""
    creq, model = ready.creq, ready.model
    sampling = {
        "max_tokens": ready.max_tokens,
        "temperature": creq.sampling.temperature,
        "top_p": creq.sampling.top_p,
        "stop": creq.sampling.stop or None,
        "presence_penalty": creq.sampling.presence_penalty,
        "frequency_penalty": creq.sampling.frequency_penalty,
        "top_k": creq.sampling.top_k,
        "seed": creq.sampling.seed,
    }

    def payload_for(router: RouterInfo) -> dict[str, Any]:
        return api_for(router.api_version).payload(
            session_id=router.session_id,
            prompt=ready.prompt,
            stream=creq.stream,
            timeout=model.request_timeout,
            client_reference=request_id,
            sampling=sampling,
        )

    return upstream.open_completion(
        routers=ready.routers, model=model, payload_for=payload_for, stream=creq.stream
    )


@dataclass(slots=True)
class _Answer:
    """A forwarded request whose answer is on its way: what relaying and billing it needs."""

    call: Call
    creq: CompletionRequest
    model: ModelInfo
    up: upstream.Upstream
    admission: Admission
    prompt_estimate: int
    max_tokens: int
    ident: str
    created: int

    def echoed(self) -> str:
        """The prompt, when a legacy completion asked for `echo`: it leads the answer's text."""
        return (self.creq.prompt or "") if self.creq.echo else ""

    def new_relay(self) -> Relay:
        return Relay(stops=self.creq.sampling.stop, max_tokens=self.max_tokens)

    def bill(
        self, relay: Relay, *, prompt_tokens: object = None, completion_tokens: object = None
    ) -> None:
        """Put the counts for what `relay` delivered on the usage record (inference.relay)."""
        counts = bill(
            relay,
            prompt_reported=prompt_tokens,
            completion_reported=completion_tokens,
            prompt_estimate=self.prompt_estimate,
            context_length=self.model.context_length,
            router_id=self.up.router.id,
        )
        self.call.usage.prompt_tokens = counts.prompt_tokens
        self.call.usage.completion_tokens = counts.completion_tokens
        self.call.usage.estimated = counts.estimated


def _answer_json(a: _Answer) -> JsonResponse:
    relay = a.new_relay()
    try:
        if upstream.is_event_stream(a.up.response):
            completion = _collect_stream(a.up, relay)
        else:
            completion = upstream.read_completion(a.up)
            relay.feed_answer(completion.text, completion.completion_tokens)
    except ApiError as error:
        return a.call.fail(error, headers=a.admission.headers)
    finally:
        a.up.close()
    a.bill(
        relay,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    a.call.end(outcome=Outcome.OK, status=200)
    face = a.call.face
    body = face.body(
        ident=a.ident,
        created=a.created,
        model=a.model.public_id,
        relay=relay,
        router_finish=completion.finish_reason,
        input_tokens=a.call.usage.prompt_tokens,
        output_tokens=a.call.usage.completion_tokens,
        echo=a.echoed(),
    )
    response = JsonResponse(body)
    for name, value in face.headers(a.admission.headers).items():
        response[name] = value
    return response


def _collect_stream(up: upstream.Upstream, relay: Relay) -> upstream.Completion:
    """An SSE answer to a non-stream request, relayed into `relay` within the call's deadline."""
    finish, prompt_t, completion_t = None, None, None
    try:
        for event in upstream.iter_stream(up.response, deadline=up.deadline):
            relay.feed(event.text)
            if relay.over:
                break  # the router sends past max_tokens: nothing more of it is wanted
            finish = event.finish_reason or finish
            if event.prompt_tokens is not None:
                prompt_t, completion_t = event.prompt_tokens, event.completion_tokens
    except upstream.StreamBroken:
        raise UpstreamError("The upstream model server broke off its answer. Retry.") from None
    relay.flush()
    return upstream.Completion(
        text=relay.text(),
        finish_reason=finish,
        prompt_tokens=prompt_t,
        completion_tokens=completion_t,
    )


_END = object()
_IDLE = object()  # no event within the keep-alive interval
_NOT_YET = object()  # no event read yet (asked without waiting)
# What one write to the client may gather of events that were read already.
_GATHER_BYTES = 16384


class _StreamTimeLimit(Exception):
    """The stream reached settings.STREAM_MAX_SECONDS."""


def _pump(up: upstream.Upstream, out: queue.Queue) -> None:
    """Read the router's stream on its own thread (a greenlet under gevent) so the client side
    can send keep-alives while the first token is slow to come."""
    try:
        if upstream.is_event_stream(up.response):
            for n, event in enumerate(upstream.iter_stream(up.response)):
                out.put(event)
                if n == 0:
                    # A greenlet runs until it blocks: without this, the events that came
                    # with the first (a router sends several in a packet) were all read
                    # before the client side could write the first token.
                    time.sleep(0)
        else:  # a JSON answer to a stream request: one event with everything
            c = upstream.read_completion(up)
            out.put(
                upstream.StreamEvent(
                    text=c.text,
                    finish_reason=c.finish_reason,
                    prompt_tokens=c.prompt_tokens,
                    completion_tokens=c.completion_tokens,
                    whole=True,
                )
            )
        out.put(_END)
    except (upstream.StreamBroken, ApiError) as exc:
        out.put(exc)
    except Exception as exc:
        out.put(upstream.StreamBroken(exc.__class__.__name__))


def _next_event(events: queue.Queue, deadline: float, *, wait: bool = True) -> object:
    """The router's next event, _IDLE after a keep-alive interval without one (_NOT_YET at once
    without `wait`); raises _StreamTimeLimit once the stream has lasted STREAM_MAX_SECONDS."""
    if not wait:
        try:
            return events.get_nowait()
        except queue.Empty:
            return _NOT_YET
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _StreamTimeLimit
    try:
        return events.get(timeout=min(settings.STREAM_KEEPALIVE_SECONDS, remaining))
    except queue.Empty:
        return _IDLE


def _send_timeout(client_socket: socket.socket | None, seconds: float | None) -> float | None:
    """Bound each write to the client (gunicorn's socket under gevent: a send that waits
    longer raises, the server closes the connection and the stream ends as a disconnect).
    Returns the previous timeout, to put back when the stream ends."""
    if client_socket is None:
        return None
    try:
        previous = client_socket.gettimeout()
        client_socket.settimeout(seconds)
        return previous
    except OSError:  # already closed: nothing to bound
        return None


def _answer_stream(a: _Answer, client_socket: socket.socket | None = None) -> StreamingHttpResponse:
    face = a.call.face
    writer = face.writer(
        ident=a.ident,
        created=a.created,
        model=a.model.public_id,
        creq=a.creq,
        request_id=a.call.usage.request_id,
    )
    events: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(a.up, events), daemon=True)
    reader.start()
    body = _stream_body(a, writer, events, client_socket)
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in face.headers(a.admission.headers).items():
        response[name] = value
    return response


def _stream_body(
    a: _Answer, writer: StreamWriter, events: queue.Queue, client_socket: socket.socket | None
) -> Iterator[bytes]:
    """The SSE body: the router's events relayed, then the end the stream had (finished, cut at
    its time limit, broken off, or the client gone), and the call metered whatever it was."""
    call, up = a.call, a.up
    relay = a.new_relay()
    deadline = call.started + settings.STREAM_MAX_SECONDS
    outcome, status, code = Outcome.OK, 200, ""
    previous_timeout = _send_timeout(client_socket, settings.STREAM_WRITE_TIMEOUT_SECONDS)
    metrics.STREAMS_IN_FLIGHT.inc()  # dec in the finally below
    try:
        opening = writer.open(input_tokens=a.prompt_estimate)
        if a.echoed():
            opening += writer.content(a.echoed())
        ended, held = yield from _relay_events(call, events, deadline, relay, writer, opening)
        yield from _stream_finished(a, relay, writer, ended, held)
    except GeneratorExit:
        outcome, status, code = Outcome.CANCELLED, 499, "client_disconnected"
        a.bill(relay)
        raise
    except _StreamTimeLimit:
        outcome, status, code = Outcome.TIMEOUT, 504, "upstream_timeout"
        log.warning("stream reached its time limit", extra={"router_id": up.router.id})
        yield from _stream_cut(
            a,
            relay,
            writer,
            message=f"The answer reached the {settings.STREAM_MAX_SECONDS} s limit of a "
            "stream and was cut; what you received is incomplete. Ask for a shorter answer.",
            code=code,
        )
    except (upstream.StreamBroken, ApiError) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        outcome = Outcome.TIMEOUT if timeout else Outcome.UPSTREAM_ERROR
        status, code = (504, "upstream_timeout") if timeout else (502, "upstream_error")
        log.warning("stream broke off", extra={"router_id": up.router.id, "reason": str(exc)})
        yield from _stream_cut(
            a,
            relay,
            writer,
            message="The upstream model server broke off the answer; what "
            "you received is incomplete. Retry the request.",
            code=code,
        )
    finally:
        # However the stream ended, and whatever closing it costs, the record is written.
        try:
            metrics.STREAMS_IN_FLIGHT.dec()
            up.close()
            _send_timeout(client_socket, previous_timeout)
        finally:
            call.end(outcome=outcome, status=status, error_code=code)


@dataclass(slots=True)
class _RouterEnd:
    """What the router said about the end of its answer: why it stopped, and its counts."""

    finish_reason: str | None = None
    prompt_tokens: object = None  # as reported: inference.relay checks them before billing
    completion_tokens: object = None


def _relay_events(
    call: Call,
    events: queue.Queue,
    deadline: float,
    relay: Relay,
    writer: StreamWriter,
    opening: bytes,
) -> Generator[bytes, None, tuple[_RouterEnd, bytes]]:
    """The router's events as SSE chunks (keep-alives while it is silent), until its end or
    max_tokens; returns what it said about the end, and the chunks not yet written. Raises
    what broke the stream, after writing what was relayed before it.

    Each write to the client is a send and a wake-up of the client. The stream's opening waits
    for the first event if it was read already, and goes out with the headers and the first
    token in one write; the first token goes out as soon as it is relayed. After it, the
    chunks of the events read already (a router sends several in one packet) go in one write."""
    ended = _RouterEnd()
    held = [opening] if opening else []
    size = len(opening)
    first_token = True
    while True:
        call.keep_alive()
        item = _next_event(events, deadline, wait=not held)
        if item is _NOT_YET:
            yield b"".join(held)
            held, size = [], 0
            continue
        if item is _IDLE:
            yield writer.keep_alive()
            continue
        if item is _END:
            return ended, b"".join(held)
        if isinstance(item, Exception):
            if held:  # what was relayed before the break reaches the client first
                yield b"".join(held)
            raise item
        assert isinstance(item, upstream.StreamEvent)  # what _pump puts besides the above
        if item.prompt_tokens is not None:
            ended.prompt_tokens, ended.completion_tokens = (
                item.prompt_tokens,
                item.completion_tokens,
            )
        if item.whole:
            piece = relay.feed_answer(item.text, item.completion_tokens)
        else:
            piece = relay.feed(item.text)
        if piece:
            chunk = writer.content(piece)
            held.append(chunk)
            size += len(chunk)
        if relay.over:
            return ended, b"".join(held)  # the router sends past max_tokens: stop reading it
        ended.finish_reason = item.finish_reason or ended.finish_reason
        if (piece and first_token) or size >= _GATHER_BYTES:
            first_token = False
            yield b"".join(held)
            held, size = [], 0


def _stream_finished(
    a: _Answer, relay: Relay, writer: StreamWriter, ended: _RouterEnd, held: bytes
) -> Iterator[bytes]:
    """A stream's regular end: the chunks not yet written and the held-back tail, the finish
    (with usage: OpenAI's if asked, Anthropic's always) in the same write, then [DONE] or
    message_stop. The slot is released before that last event: the client has its whole
    answer by then."""
    tail = relay.flush()
    if tail:
        held += writer.content(tail)
    a.bill(relay, prompt_tokens=ended.prompt_tokens, completion_tokens=ended.completion_tokens)
    usage = a.call.usage
    yield held + writer.finish(
        relay=relay,
        router_finish=ended.finish_reason,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
    )
    a.call.release_slot()
    yield writer.done()


def _stream_cut(
    a: _Answer, relay: Relay, writer: StreamWriter, *, message: str, code: str
) -> Iterator[bytes]:
    """A stream cut short: bill what was delivered, tell the client in an error event (then
    OpenAI's [DONE]; Anthropic's stream ends at the error)."""
    a.bill(relay)
    yield writer.cut(message=message, code=code)
    a.call.release_slot()
    last = writer.cut_done()
    if last:
        yield last
