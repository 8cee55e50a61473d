"""How a stream's chunks are grouped into writes to the client (each write is a send and a
wake-up of the client): the opening goes with the first token when that was read already, the
first token goes out as soon as it is relayed, the events read already after it go in one
write (with the finish, when the end was read too), and nothing relayed is held back when the
router's stream breaks.

The relaying generator is driven directly with a real queue of the router's events (what the
reader thread puts there), so which events were read already is decided by the test."""

from __future__ import annotations

import queue
import time

import pytest

from inference import upstream
from inference.faces import OpenAIFace
from inference.relay import Relay
from inference.services import _END, Call, _relay_events
from inference.validation import parse_chat
from metering.lifecycle import Usage

FACE = OpenAIFace(parse_chat)


def _call() -> Call:
    usage = Usage(request_id="req_writes", user_id=1, key_id=1, endpoint=FACE.endpoint)
    return Call(usage=usage, started=time.monotonic(), face=FACE)


def _writer():
    return FACE.writer(
        ident="chatcmpl-writes",
        created=1,
        model="m",
        creq=parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        request_id="req_writes",
    )


def _events(*items) -> queue.Queue:
    events: queue.Queue = queue.Queue()
    for item in items:
        events.put(item)
    return events


def _run(gen):
    """The writes a generator yields, and what it returns."""
    writes = []
    while True:
        try:
            writes.append(next(gen))
        except StopIteration as stop:
            return writes, stop.value


def _relay(events: queue.Queue, writer, opening: bytes):
    relay = Relay(stops=[], max_tokens=100)
    return _relay_events(_call(), events, time.monotonic() + 60, relay, writer, opening)


def test_events_read_together_go_out_first_token_first_and_the_rest_with_the_finish():
    writer = _writer()
    opening = writer.open(input_tokens=1)
    events = _events(
        upstream.StreamEvent(text="Hel"),
        upstream.StreamEvent(text="lo"),
        upstream.StreamEvent(text="!", finish_reason="stop"),
        _END,
    )
    writes, (ended, held) = _run(_relay(events, writer, opening))
    assert writes == [opening + writer.content("Hel")]
    assert held == writer.content("lo") + writer.content("!")  # written with the finish
    assert ended.finish_reason == "stop"


def test_the_opening_is_not_held_for_an_event_not_read_yet():
    writer = _writer()
    opening = writer.open(input_tokens=1)
    events = _events()
    gen = _relay(events, writer, opening)
    assert next(gen) == opening  # the client has the headers while the router thinks
    events.put(upstream.StreamEvent(text="Hi"))
    assert next(gen) == writer.content("Hi")
    events.put(upstream.StreamEvent(text=".", finish_reason="stop"))
    events.put(_END)
    writes, (ended, held) = _run(gen)
    assert writes == []
    assert held == writer.content(".")  # written with the finish (services._stream_finished)
    assert ended.finish_reason == "stop"


def test_what_was_relayed_before_a_break_is_written_before_it_is_raised():
    writer = _writer()
    broken = upstream.StreamBroken("EOF before a finish_reason")
    events = _events(
        upstream.StreamEvent(text="a"),
        upstream.StreamEvent(text="b"),
        upstream.StreamEvent(text="c"),
        broken,
    )
    gen = _relay(events, writer, b"")
    assert next(gen) == writer.content("a")
    assert next(gen) == writer.content("b") + writer.content("c")
    with pytest.raises(upstream.StreamBroken):
        next(gen)
