"""The pieces under the relay, alone: the token estimate that holds for every script, cutting
and counting what is relayed, the bill, the SSE line reader, and how a stream must end. (End
to end, with a router simulator, in test_inference_router_bounds.py.)"""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import urllib3

from inference.relay import TOKEN_CHARS_MAX, Relay, bill
from inference.tokens import estimate_tokens, prefix_within
from inference.upstream import LineSplitter, StreamBroken, UpstreamTimeout, iter_stream

# -- the estimate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("Hello, world!", 4),  # 13 Latin characters
        ("déjà vu, naïve café", 5),  # Latin-1 accents are Latin text
        ("你好\uff0c世界", 5),  # CJK: one per character (a full-width comma too)
        ("こんにちは", 5),
        ("안녕하세요", 5),
        ("Привет", 6),
        ("Hi 你好", 3),  # "Hi " is one token, then two characters
    ],
)
def test_estimate_counts_latin_by_four_and_everything_else_by_character(text, tokens):
    assert estimate_tokens(text) == tokens


def test_cjk_is_not_billed_at_a_quarter():
    # The old chars/4 rule billed 1000 Chinese characters as 250 tokens; tokenizers make
    # ~1000 or more of them.
    assert estimate_tokens("字" * 1000) == 1000


def test_prefix_within_keeps_the_longest_start_that_fits():
    assert prefix_within("abcdefgh", 1) == "abcd"
    assert prefix_within("你好世界", 2) == "你好"
    assert prefix_within("short", 10) == "short"
    assert prefix_within("abc", 0) == ""


# -- cutting and counting ---------------------------------------------------------------------


def relay_all(relay: Relay, pieces: list[str]) -> str:
    out = "".join(relay.feed(p) for p in pieces if not relay.over)
    return out + relay.flush()


def test_a_stream_is_cut_after_max_tokens_events():
    relay = Relay(stops=[], max_tokens=3)
    assert relay_all(relay, [" a", " b", " c", " d", " e"]) == " a b c"
    assert relay.over and relay.finish_reason("stop") == "length"
    assert relay.tokens == 3


def test_a_stream_that_ends_at_max_tokens_is_not_cut():
    relay = Relay(stops=[], max_tokens=3)
    assert relay_all(relay, [" a", " b", " c"]) == " a b c"
    assert not relay.over and relay.finish_reason("length") == "length"


def test_a_long_piece_counts_as_the_tokens_it_holds():
    relay = Relay(stops=[], max_tokens=4)
    # 40 Latin characters in one event are ~10 tokens, not one: cut to four tokens' worth.
    out = relay_all(relay, ["x" * 40])
    assert out == "x" * 16 and relay.over


def test_a_piece_of_token_chars_max_is_one_token():
    relay = Relay(stops=[], max_tokens=2)
    piece = "x" * TOKEN_CHARS_MAX
    assert relay_all(relay, [piece, piece]) == piece * 2
    assert not relay.over and relay.tokens == 2


def test_empty_pieces_use_up_no_tokens():
    relay = Relay(stops=[], max_tokens=2)
    assert relay_all(relay, ["", "", " a", "", " b"]) == " a b"
    assert not relay.over and relay.tokens == 2


def test_a_stop_sequence_split_across_pieces_is_never_sent():
    relay = Relay(stops=["END"], max_tokens=100)
    assert relay_all(relay, ["one ", "E", "N", "D two"]) == "one "
    assert relay.finish_reason("length") == "stop"


def test_a_whole_answer_is_cut_by_the_router_count():
    relay = Relay(stops=[], max_tokens=2)
    assert relay.feed_answer(" aa bb cc dd", completion_tokens=4) == " aa bb"
    assert relay.over


def test_an_implausible_count_does_not_cut_a_whole_answer_to_nothing():
    relay = Relay(stops=[], max_tokens=8)
    assert relay.feed_answer(" aa bb cc", completion_tokens=2**40) == " aa bb cc"
    assert not relay.over


def test_a_count_of_one_token_per_byte_is_believed():
    relay = Relay(stops=[], max_tokens=4)
    # 8 tokens for 8 bytes is the most a text can hold, and still plausible: it cuts at half.
    assert relay.feed_answer("abcdefgh", completion_tokens=8) == "abcd"
    assert relay.over


@pytest.mark.parametrize("count", [2, None])  # the router's count, or the estimate
def test_a_whole_answer_of_exactly_max_tokens_is_not_cut(count):
    relay = Relay(stops=[], max_tokens=2)
    assert relay.feed_answer("abcdefgh", completion_tokens=count) == "abcdefgh"
    assert not relay.over and relay.finish_reason("stop") == "stop"


def test_without_a_count_a_whole_answer_is_cut_by_the_estimate():
    relay = Relay(stops=[], max_tokens=2)
    assert relay.feed_answer("x" * 40, completion_tokens=None) == "x" * 8
    assert relay.over is True and relay.finish_reason("stop") == "length"


def test_an_uncut_answer_without_a_router_reason_finishes_with_stop():
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" a"])
    assert relay.finish_reason(None) == "stop"


# -- the bill ---------------------------------------------------------------------------------


def billed(relay: Relay, prompt, completion, *, context_length=4096):
    """(prompt tokens, completion tokens, estimated)"""
    counts = bill(
        relay,
        prompt_reported=prompt,
        completion_reported=completion,
        prompt_estimate=11,
        context_length=context_length,
        router_id=7,
    )
    return counts.prompt_tokens, counts.completion_tokens, counts.estimated


def test_reported_counts_within_bounds_are_billed_as_they_are():
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" a", " b"])
    assert billed(relay, 5, 2) == (5, 2, False)


def test_a_reported_count_of_zero_is_believed():
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [])
    assert billed(relay, 0, 0) == (0, 0, False)


@pytest.mark.parametrize(
    ("prompt", "completion"),
    [(-1, 2), (5, -3), ("5", 2), (5, 2.5), (True, 2), (5, None), (None, 2), ([], {})],
)
def test_counts_that_are_not_non_negative_integers_are_estimated(prompt, completion):
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" hello world"])
    assert billed(relay, prompt, completion) == (11, estimate_tokens(" hello world"), True)


def test_counts_past_the_bounds_are_clamped_and_marked():
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" a"])
    assert billed(relay, 2**40, 2**40, context_length=4096) == (4096, 10, True)


def test_a_cut_answer_bills_the_router_count_scaled_to_what_was_delivered():
    relay = Relay(stops=["STOP"], max_tokens=100)
    relay_all(relay, ["x" * 40, "STOP", "y" * 40])
    # Delivered 40 of the 84 characters the router sent: ~half of its 20 tokens.
    assert billed(relay, 9, 20) == (9, 10, True)


def test_a_model_allowing_no_tokens_delivers_and_bills_none():
    # max_tokens 0 is possible (a model's default_max_tokens of 0): nothing is delivered, and
    # the share of nothing received is no division by zero.
    relay = Relay(stops=[], max_tokens=0)
    assert relay_all(relay, [" a", " b"]) == ""
    assert billed(relay, 5, 3) == (5, 0, True)


def _usage_warnings(caplog) -> list:
    return [r for r in caplog.records if r.name == "inference.relay"]


def test_unusable_counts_are_logged_with_the_router_and_what_it_sent(caplog):
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" hello world"])
    caplog.set_level(logging.WARNING, logger="inference.relay")
    billed(relay, "5" * 100, -3)
    (warning,) = _usage_warnings(caplog)
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        "router reported usage unusable: billed within bounds, marked estimated"
    )
    assert warning.router_id == 7
    assert warning.reported_prompt_tokens == repr("5" * 100)[:40]
    assert len(warning.reported_prompt_tokens) == 40
    assert warning.reported_completion_tokens == "-3"
    assert warning.max_tokens == 10


def test_counts_out_of_bounds_are_logged_with_the_router_and_what_it_sent(caplog):
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" a"])
    caplog.set_level(logging.WARNING, logger="inference.relay")
    billed(relay, 10**45, 10**50, context_length=4096)
    (warning,) = _usage_warnings(caplog)
    assert warning.getMessage() == (
        "router reported usage out of bounds: billed within bounds, marked estimated"
    )
    assert warning.router_id == 7
    assert warning.reported_prompt_tokens == repr(10**45)[:40]
    assert warning.reported_completion_tokens == repr(10**50)[:40]
    assert len(warning.reported_completion_tokens) == 40
    assert warning.max_tokens == 10


def test_no_counts_at_all_or_counts_within_bounds_log_nothing(caplog):
    relay = Relay(stops=[], max_tokens=10)
    relay_all(relay, [" a"])
    caplog.set_level(logging.WARNING, logger="inference.relay")
    billed(relay, None, None)
    billed(relay, 5, 1)
    assert _usage_warnings(caplog) == []


# -- reading SSE lines ------------------------------------------------------------------------


def test_lines_come_out_whole_however_the_bytes_are_cut():
    lines = LineSplitter(limit=1000)
    stream = b"data: one\r\n\r\ndata: two\n\ndata: three\n\n"
    out = []
    for i in range(len(stream)):
        out += lines.feed(stream[i : i + 1])
    assert [line.strip() for line in out if line.strip()] == [
        b"data: one",
        b"data: two",
        b"data: three",
    ]


def test_many_lines_in_one_chunk():
    lines = LineSplitter(limit=100)
    out = lines.feed(b"a\nb\nc\nrest")
    assert out == [b"a", b"b", b"c"]
    assert lines.feed(b" of it\n") == [b"rest of it"]


def test_a_blank_line_at_the_start_of_a_chunk_is_a_line():
    assert LineSplitter(limit=100).feed(b"\nabc\n") == [b"", b"abc"]
    lines = LineSplitter(limit=100)
    assert lines.feed(b"data: a\n") == [b"data: a"]
    assert lines.feed(b"\ndata: b\n") == [b"", b"data: b"]  # the separator came next


def test_a_line_past_the_limit_breaks_the_stream():
    lines = LineSplitter(limit=64)
    lines.feed(b"data: " + b"x" * 50)
    with pytest.raises(StreamBroken):
        lines.feed(b"x" * 50)


def test_a_line_of_exactly_the_limit_is_kept():
    lines = LineSplitter(limit=64)
    assert lines.feed(b"x" * 64) == []
    assert lines.feed(b"\n") == [b"x" * 64]


def _router_stream(body: bytes):
    """A router's SSE answer as urllib3 reads it off the socket."""
    return urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False, status=200)


PIECE = b'data: {"id": "t1", "choices": [{"text": " a"}]}\n\n'
FINISH = b'data: {"id": "t1", "choices": [{"text": "", "finish_reason": "stop"}]}\n\n'


def test_a_stream_with_its_finish_reason_is_whole_with_or_without_done():
    for body in (PIECE + FINISH + b"data: [DONE]\n\n", PIECE + FINISH):
        events = list(iter_stream(_router_stream(body)))
        assert [(e.text, e.finish_reason) for e in events] == [(" a", None), ("", "stop")]


@pytest.mark.parametrize("ending", [b"data: [DONE]\n\n", b""], ids=["done", "eof"])
def test_a_stream_that_ends_before_its_finish_reason_is_broken(ending):
    with pytest.raises(StreamBroken):
        list(iter_stream(_router_stream(PIECE + ending)))


@pytest.mark.parametrize("odd", [b"1", b"true", b'["stop"]', b'""'])
def test_a_finish_reason_that_is_no_text_finishes_nothing(odd):
    odd_piece = (
        b'data: {"id": "t1", "choices": [{"text": " b", "finish_reason": ' + odd + b"}]}\n\n"
    )
    events = list(iter_stream(_router_stream(PIECE + odd_piece + FINISH)))
    assert [(e.text, e.finish_reason) for e in events] == [(" a", None), (" b", None), ("", "stop")]


def _texts(body: bytes) -> list[tuple[str, str | None]]:
    return [(e.text, e.finish_reason) for e in iter_stream(_router_stream(body))]


def test_comments_and_other_fields_between_events_are_skipped():
    body = b": keep-alive\nevent: message\nid: 1\n" + PIECE + b": ping\n\n" + FINISH
    assert _texts(body) == [(" a", None), ("", "stop")]


def test_data_without_a_space_after_the_colon_is_read():
    body = PIECE.replace(b"data: ", b"data:") + FINISH.replace(b"data: ", b"data:")
    assert _texts(body) == [(" a", None), ("", "stop")]


def test_nothing_after_done_is_relayed():
    more = b'data: {"id": "t1", "choices": [{"text": " b"}]}\n\n'
    assert _texts(PIECE + FINISH + b"data: [DONE]\n\n" + more) == [(" a", None), ("", "stop")]


@pytest.mark.parametrize(
    ("payload", "kept"),
    [
        (b'{"id": "t1", "choices": [{"text": " b"}]}', [" b"]),
        (b'{"id": "t1", "choices": [{"text": " b"}]} {"more": 1}', []),  # extra data
        (b'{"id": "t1", "choices": [{"text": " b"}]}}', []),
        (b'{"id": "t1", "choices": [{"text": " b"', []),  # cut short
        (b'{"id": "t1", "choices": [{"text": "\xff"}]}', []),  # not UTF-8
        (b'{"id": "t1", "choices": [{"text": "\xed\xa0\x80"}]}', ["\ud800"]),  # a lone surrogate
        (b'\xef\xbb\xbf{"id": "t1", "choices": [{"text": " b"}]}', [" b"]),  # a UTF-8 BOM
        ('{"id": "t1", "choices": [{"text": " b"}]}'.encode("utf-16-le"), [" b"]),
        (b'["id", "t1"]', []),  # JSON, not an object
    ],
    ids=["object", "extra", "brace", "cut", "not-utf8", "surrogate", "bom", "utf16", "list"],
)
def test_an_events_json_is_read_as_json_loads_reads_bytes(payload, kept):
    """The events' JSON is parsed on a quicker path than json.loads for the usual UTF-8
    object (inference.upstream._event_json); what it keeps and skips is json.loads's."""
    texts = _texts(PIECE + b"data: " + payload + b"\n\n" + FINISH)
    assert texts == [(" a", None), *((t, None) for t in kept), ("", "stop")]


def test_a_stream_past_its_deadline_times_out():
    with pytest.raises(UpstreamTimeout):
        list(iter_stream(_router_stream(PIECE + FINISH), deadline=time.monotonic() - 1))


def test_data_that_is_not_an_event_object_is_skipped():
    body = PIECE + b"data: not json\n\ndata: [1, 2]\n\n" + FINISH
    assert _texts(body) == [(" a", None), ("", "stop")]


@pytest.mark.parametrize("field", ["task_id", "id"])
def test_a_second_task_interleaved_in_the_stream_is_dropped(field):
    def event(task: str, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "finish_reason": finish}
        return b"data: " + json.dumps({field: task, "choices": [choice]}).encode() + b"\n\n"

    body = event("t1", " a") + event("t2", " other") + event("t1", " b", "stop")
    assert _texts(body) == [(" a", None), (" b", "stop")]
