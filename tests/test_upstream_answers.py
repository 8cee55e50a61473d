"""What the upstream client makes of a router's answer, whatever shape it comes in: the JSON
shapes routers send, what it keeps of each, what it refuses (and tells the customer), the
size and time bounds of reading one, and how it tells a stream from a JSON answer. The
answers are urllib3 responses over their bytes, as read off a router's socket; end to end,
with a router simulator, in test_inference_router_bounds.py and _router_errors.py."""

from __future__ import annotations

import io
import json
import time

import pytest
import urllib3

from catalog.routing import RouterInfo
from core.errors import UpstreamError, UpstreamTimeout
from inference.upstream import (
    AnswerTooLarge,
    Completion,
    Upstream,
    is_event_stream,
    parse_completion_json,
    read_completion,
)

UNREADABLE = "could not read"


def _unreadable(data) -> str:
    with pytest.raises(UpstreamError) as refused:
        parse_completion_json(data)
    return refused.value.message.lower()


# -- the shapes routers answer in -------------------------------------------------------------


@pytest.mark.parametrize(
    "choice",
    [
        {"text": " hello", "finish_reason": "length"},  # completions
        {"message": {"role": "assistant", "content": " hello"}, "finish_reason": "length"},
        {"delta": {"content": " hello"}, "finish_reason": "length"},  # a chunk as the answer
    ],
    ids=["text", "message", "delta"],
)
def test_the_answer_is_read_from_each_choice_shape(choice):
    usage = {"prompt_tokens": 7, "completion_tokens": 2}
    answer = parse_completion_json({"choices": [choice], "usage": usage})
    assert answer == Completion(
        text=" hello", finish_reason="length", prompt_tokens=7, completion_tokens=2
    )


def test_a_choices_text_wins_over_its_message():
    choice = {"text": " the text", "message": {"content": " the message"}}
    assert parse_completion_json({"choices": [choice]}).text == " the text"


def test_an_answer_with_only_an_output_is_a_whole_answer():
    for answer in ({"output": " hello"}, {"choices": [], "output": " hello"}):
        assert parse_completion_json(answer) == Completion(
            text=" hello", finish_reason="stop", prompt_tokens=None, completion_tokens=None
        )


@pytest.mark.parametrize("finish", [None, "", 5], ids=["none", "empty", "not-text"])
def test_a_missing_or_odd_finish_reason_reads_as_stop(finish):
    answer = parse_completion_json({"choices": [{"text": " a", "finish_reason": finish}]})
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize("text", [None, 5, ["a"]], ids=["none", "number", "list"])
def test_a_choice_without_text_is_an_empty_answer(text):
    assert parse_completion_json({"choices": [{"text": text}]}).text == ""
    assert parse_completion_json({"choices": [{}]}).text == ""


@pytest.mark.parametrize("usage", [None, "lots", [3, 4]], ids=["none", "text", "list"])
def test_usage_that_is_not_an_object_reports_no_counts(usage):
    answer = parse_completion_json({"choices": [{"text": " a"}], "usage": usage})
    assert (answer.prompt_tokens, answer.completion_tokens) == (None, None)


# -- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [[{"text": "a"}], "a", None, {}, {"choices": ["a"]}, {"choices": "a"}, {"output": 5}],
    ids=["list", "text", "null", "empty", "choice-not-object", "choices-not-list", "output-odd"],
)
def test_an_answer_in_no_known_shape_is_refused_as_unreadable(data):
    assert UNREADABLE in _unreadable(data)


# -- reading a JSON answer off the wire -------------------------------------------------------


def _upstream(body: bytes, deadline: float | None = None) -> Upstream:
    router = RouterInfo(
        id=1,
        pool_id=1,
        base_url="http://router.invalid",
        api_version="v1",
        session_id=1,
        token="t",
        weight=1,
        connect_timeout=1.0,
        read_timeout=None,
        health="ok",
    )
    response = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False, status=200)
    deadline = time.monotonic() + 60 if deadline is None else deadline
    return Upstream(router=router, response=response, deadline=deadline)


def _answer_of(size: int) -> bytes:
    """A JSON answer of exactly `size` bytes."""
    empty = json.dumps({"output": ""}).encode()
    return json.dumps({"output": "x" * (size - len(empty))}).encode()


def test_an_answer_of_exactly_the_size_limit_is_read(settings):
    settings.UPSTREAM_MAX_BYTES = 1000
    whole = _answer_of(1000)
    assert read_completion(_upstream(whole)).text == json.loads(whole)["output"]
    with pytest.raises(AnswerTooLarge):
        read_completion(_upstream(_answer_of(1001)))


def test_an_answer_read_in_many_pieces_is_read_whole():
    # read in 64 KiB pieces: this one comes in three
    whole = _answer_of(150_000)
    assert read_completion(_upstream(whole)).text == json.loads(whole)["output"]


def test_an_answer_past_the_calls_deadline_times_out():
    with pytest.raises(UpstreamTimeout) as timed_out:
        read_completion(_upstream(_answer_of(100), deadline=time.monotonic() - 1))
    assert "did not answer in time" in timed_out.value.message.lower()


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"output": "cut off'], ids=str)
def test_an_answer_that_is_not_json_is_refused_as_unreadable(body):
    with pytest.raises(UpstreamError) as refused:
        read_completion(_upstream(body))
    assert UNREADABLE in refused.value.message.lower()


# -- a stream or a JSON answer ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "stream"),
    [
        ({"Content-Type": "text/event-stream"}, True),
        ({"content-type": "text/event-stream; charset=utf-8"}, True),
        ({"Content-Type": "application/json"}, False),
        ({}, False),  # a router that names no type: read as JSON, which says what it is
    ],
    ids=["sse", "sse-charset", "json", "none"],
)
def test_the_answer_is_a_stream_by_its_content_type(headers, stream):
    response = urllib3.HTTPResponse(body=io.BytesIO(b""), headers=headers, preload_content=False)
    assert is_event_stream(response) is stream
