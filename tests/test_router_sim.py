"""The router simulator, spoken to over real HTTP the way the portal's router client will.

No Django here: the simulator is a standalone gevent process started by ``RouterSim``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.routersim import RouterSim

TIMEOUT = 10
PROMPT = "Say hello to the simulator."  # 27 characters: 6 prompt tokens by the sim's estimate


# -- helpers ----------------------------------------------------------------------------------


def get(sim: RouterSim, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", sim.headers)
    return requests.get(f"{sim.url}{path}", timeout=TIMEOUT, **kwargs)


def complete(sim: RouterSim, path: str = "/api/v1/completions", **body: Any) -> requests.Response:
    """POST a completion; session 1 goes in the body unless the path carries one."""
    payload: dict[str, Any] = {"prompt": PROMPT, "prompt_type": 1, **body}
    if path.endswith("/completions"):
        payload.setdefault("session_id", 1)
    stream = bool(payload.get("stream"))
    return requests.post(
        f"{sim.url}{path}", json=payload, headers=sim.headers, timeout=TIMEOUT, stream=stream
    )


def stream(sim: RouterSim, path: str = "/api/v1/completions", **body: Any) -> requests.Response:
    return complete(sim, path, stream=True, **body)


def sse_data(response: requests.Response) -> Iterator[str]:
    """The payload of each ``data:`` line, as the router client will see them."""
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            yield line[len(b"data: ") :].decode()


def read_stream(response: requests.Response, into: list[Any] | None = None) -> list[Any]:
    """Parsed events ("[DONE]" kept as the string); ``into`` keeps them if the stream breaks."""
    events: list[Any] = [] if into is None else into
    for data in sse_data(response):
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def content_chunks(events: list[Any], task_id: int | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if isinstance(e, dict) and e["choices"] and task_id in (None, e["task_id"])
    ]


def assert_error(response: requests.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if message is not None:
        assert error["message"] == message


def wait_for_status(sim: RouterSim, key: str, value: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while get(sim, "/api/v1/status").json()[key] != value:
        assert time.monotonic() < deadline, f"status {key} never became {value!r}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sim() -> Iterator[RouterSim]:
    with RouterSim() as router:
        yield router


# -- info routes and auth ---------------------------------------------------------------------


def test_status_reports_health_and_counters(sim: RouterSim) -> None:
    response = get(sim, "/api/v1/status")

    assert response.status_code == 200
    status = response.json()
    assert {"active_sessions", "connected_miners", "cpu_usage", "memory_usage", "uptime"} <= set(
        status
    )
    assert status["active_sessions"] == 1
    assert isinstance(status["requests_total"], int)
    assert status["in_flight"] == 0


def test_info_describes_the_node(sim: RouterSim) -> None:
    info = get(sim, "/api/v1/info").json()

    assert {"name", "version", "address", "active_sessions", "total_sessions"} <= set(info)
    assert isinstance(info["node_stats"], dict)


def test_ping(sim: RouterSim) -> None:
    assert get(sim, "/api/v1/ping").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/api/v1/status", "/api/v1/info", "/api/v1/ping"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "default-dev-token"},
        {"Authorization": "Bearer default-dev-token-and-more"},
    ],
    ids=["missing", "wrong", "no-bearer", "prefix"],
)
def test_every_route_wants_the_router_key(
    sim: RouterSim, path: str, headers: dict[str, str]
) -> None:
    assert_error(get(sim, path, headers=headers), 401)


def test_completions_want_the_router_key(sim: RouterSim) -> None:
    response = requests.post(
        f"{sim.url}/api/v1/completions", json={"session_id": 1, "prompt": "hi"}, timeout=TIMEOUT
    )
    assert_error(response, 401)


def test_unknown_route_is_404_and_wrong_method_is_405(sim: RouterSim) -> None:
    assert_error(get(sim, "/api/v1/miners"), 404)
    assert_error(get(sim, "/api/v1/completions"), 405)
    assert_error(requests.post(f"{sim.url}/api/v1/status", headers=sim.headers), 405)


# -- non-stream completions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/completions",
        "/api/v1/completions/1",
        "/api/v3/completions",
        "/api/v3/completions/1",
    ],
)
def test_non_stream_completion_has_the_text_completion_shape(sim: RouterSim, path: str) -> None:
    response = complete(sim, path, client_reference="req-123", temperature=0.2, stop=["\n"])

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "cortensor-sim"
    assert isinstance(body["task_id"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "text": "".join(f" word{i}" for i in range(8)),
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def test_each_completion_gets_its_own_task(sim: RouterSim) -> None:
    first, second = complete(sim).json(), complete(sim).json()

    assert first["task_id"] != second["task_id"]
    assert first["id"] != second["id"]


def test_max_tokens_caps_the_answer_with_finish_reason_length(sim: RouterSim) -> None:
    body = complete(sim, max_tokens=3).json()

    assert body["choices"][0]["text"] == " word0 word1 word2"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_max_tokens_above_the_answer_length_does_not_cap(sim: RouterSim) -> None:
    body = complete(sim, max_tokens=8).json()

    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize(
    ("path", "session_id"),
    [
        ("/api/v1/completions", 99),
        ("/api/v3/completions", 99),
        ("/api/v1/completions/99", None),
        ("/api/v3/completions/abc", None),
    ],
)
def test_unknown_session_is_404(sim: RouterSim, path: str, session_id: int | None) -> None:
    body = {} if session_id is None else {"session_id": session_id}
    assert_error(complete(sim, path, **body), 404, "session not found")


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        json.dumps({"session_id": 1}).encode(),
        json.dumps({"session_id": 1, "prompt": ["a list"]}).encode(),
        json.dumps({"prompt": "no session"}).encode(),
        json.dumps({"session_id": "one", "prompt": "hi"}).encode(),
        json.dumps({"session_id": 1, "prompt": "hi", "max_tokens": 0}).encode(),
    ],
    ids=[
        "bad-json",
        "empty",
        "not-object",
        "no-prompt",
        "prompt-not-string",
        "no-session",
        "session-not-int",
        "max-tokens-zero",
    ],
)
def test_bad_request_body_is_400(sim: RouterSim, data: bytes) -> None:
    response = requests.post(
        f"{sim.url}/api/v1/completions",
        data=data,
        headers={**sim.headers, "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert_error(response, 400)


def test_status_counts_completion_requests(sim: RouterSim) -> None:
    before = get(sim, "/api/v1/status").json()["requests_total"]
    complete(sim)
    complete(sim, stream=True).close()

    assert get(sim, "/api/v1/status").json()["requests_total"] == before + 2


def test_recent_requests_show_what_the_client_forwarded(sim: RouterSim) -> None:
    complete(sim, "/api/v3/completions/1", client_reference="req-abc", max_tokens=5)

    last = get(sim, "/_sim/requests").json()["requests"][-1]
    assert last["path"] == "/api/v3/completions/1"
    assert last["body"]["client_reference"] == "req-abc"
    assert last["body"]["max_tokens"] == 5


# -- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/completions", "/api/v3/completions/1"])
def test_stream_sends_chunks_then_usage_then_done(sim: RouterSim, path: str) -> None:
    response = stream(sim, path)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Transfer-Encoding"] == "chunked"
    events = read_stream(response)
    chunks, usage, done = events[:-2], events[-2], events[-1]

    assert [c["choices"][0]["text"] for c in chunks] == [f" word{i}" for i in range(8)]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 7 + ["stop"]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({(c["id"], c["task_id"]) for c in chunks}) == 1
    assert usage["choices"] == []
    assert (usage["id"], usage["task_id"]) == (chunks[0]["id"], chunks[0]["task_id"])
    assert usage["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}
    assert done == "[DONE]"


def test_stream_max_tokens_caps_chunks_with_finish_reason_length(sim: RouterSim) -> None:
    events = read_stream(stream(sim, max_tokens=2))

    chunks = content_chunks(events)
    assert [c["choices"][0]["text"] for c in chunks] == [" word0", " word1"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 2
    assert events[-1] == "[DONE]"


def test_client_disconnect_mid_stream_is_quiet() -> None:
    with RouterSim("--chunk-delay-ms", "50") as router:
        response = stream(router)
        next(sse_data(response))
        response.close()

        wait_for_status(router, "in_flight", 0)
        assert "Traceback" not in router.output()


# -- faults -----------------------------------------------------------------------------------


def test_latency_ms_delays_the_answer_and_the_first_token() -> None:
    with RouterSim("--latency-ms", "300") as router:
        started = time.monotonic()
        assert complete(router).status_code == 200
        assert time.monotonic() - started >= 0.3

        started = time.monotonic()
        first = next(sse_data(stream(router)))
        assert time.monotonic() - started >= 0.3
        assert json.loads(first)["choices"][0]["text"] == " word0"


def test_status_answers_while_a_completion_waits_out_its_latency() -> None:
    """Health probes are not delayed: status answers while a completion is still held."""
    with RouterSim("--latency-ms", "5000") as router, ThreadPoolExecutor(1) as pool:
        held = pool.submit(complete, router)
        wait_for_status(router, "in_flight", 1)  # answered during the completion's latency
        assert not held.done()
        assert held.result().status_code == 200


def test_chunk_delay_ms_spaces_out_stream_chunks() -> None:
    with RouterSim("--chunk-delay-ms", "100", "--chunks", "4") as router:
        arrivals = []
        start = time.monotonic()
        for data in sse_data(stream(router)):
            arrivals.append(time.monotonic() - start)
            if json.loads(data)["choices"][0]["finish_reason"]:
                break

    # Lower bounds from the request's start only: the k-th chunk cannot arrive before k-1
    # delays were slept. (Gaps between arrivals are not bounded below: a chunk read late on
    # a busy machine shortens the next gap, 0.086 s once against 0.09.)
    assert len(arrivals) == 4
    assert all(arrival >= 0.1 * k for k, arrival in enumerate(arrivals)), arrivals


def test_chunks_sets_the_answer_length() -> None:
    with RouterSim("--chunks", "3") as router:
        assert complete(router).json()["choices"][0]["text"] == " word0 word1 word2"
        assert len(content_chunks(read_stream(stream(router)))) == 3


def test_error_rate_one_fails_every_completion_but_not_status() -> None:
    with RouterSim("--error-rate", "1.0") as router:
        for _ in range(3):
            assert_error(complete(router), 503)
        assert_error(stream(router), 503)
        assert get(router, "/api/v1/status").status_code == 200


def test_error_rate_half_fails_every_second_completion() -> None:
    with RouterSim("--error-rate", "0.5") as router:
        codes = [complete(router).status_code for _ in range(6)]

    assert codes == [200, 503] * 3


def test_hang_never_answers_completions_but_status_still_works() -> None:
    with RouterSim("--hang") as router:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(
                f"{router.url}/api/v1/completions",
                json={"session_id": 1, "prompt": "hi"},
                headers=router.headers,
                timeout=(3, 1),
            )
        status = get(router, "/api/v1/status")

        assert status.status_code == 200
        assert status.json()["in_flight"] == 1


def test_drop_after_breaks_the_stream_after_n_chunks() -> None:
    with RouterSim("--drop-after", "2") as router:
        response = stream(router)
        assert response.status_code == 200
        events: list[Any] = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            read_stream(response, into=events)

        assert [e["choices"][0]["text"] for e in events] == [" word0", " word1"]
        assert all(e["choices"][0]["finish_reason"] is None for e in events)
        assert "Traceback" not in router.output()


def test_drop_after_zero_breaks_the_stream_right_after_the_headers() -> None:
    with RouterSim("--drop-after", "0") as router:
        response = stream(router)
        assert response.status_code == 200
        events: list[Any] = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            read_stream(response, into=events)

        assert events == []


def test_drop_after_cuts_non_stream_requests_without_an_answer() -> None:
    with RouterSim("--drop-after", "2") as router:
        with pytest.raises(requests.exceptions.ConnectionError):
            complete(router)
        wait_for_status(router, "in_flight", 0)
        assert "Traceback" not in router.output()


def test_drop_after_spares_streams_that_end_before_n_chunks() -> None:
    with RouterSim("--drop-after", "2") as router:
        events = read_stream(stream(router, max_tokens=2))

    assert events[-1] == "[DONE]"


def test_no_usage_omits_usage_everywhere() -> None:
    with RouterSim("--no-usage") as router:
        assert "usage" not in complete(router).json()
        events = read_stream(stream(router))

    assert not any("usage" in e for e in events if isinstance(e, dict))
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_json_for_stream_answers_plain_json_to_a_stream_request() -> None:
    with RouterSim("--json-for-stream") as router:
        response = stream(router)
        body = response.json()  # read before the simulator stops (the response streams)

    assert response.headers["Content-Type"] == "application/json"
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 8


def test_sessions_lists_the_sessions_that_exist() -> None:
    with RouterSim("--sessions", "1,2") as router:
        assert complete(router, session_id=1).status_code == 200
        assert complete(router, "/api/v1/completions/2").status_code == 200
        assert_error(complete(router, session_id=3), 404, "session not found")
        assert get(router, "/api/v1/status").json()["active_sessions"] == 2


def test_token_sets_the_router_key() -> None:
    with RouterSim("--token", "s3cret") as router:
        assert router.headers == {"Authorization": "Bearer s3cret"}
        assert get(router, "/api/v1/status").status_code == 200
        default = {"Authorization": "Bearer default-dev-token"}
        assert_error(get(router, "/api/v1/status", headers=default), 401)


def test_interleave_mixes_in_a_second_task_that_finishes_first() -> None:
    with RouterSim("--interleave", "--chunks", "4") as router:
        events = read_stream(stream(router))

    first_task = events[0]["task_id"]
    ours = content_chunks(events, first_task)
    others = [e for e in content_chunks(events) if e["task_id"] != first_task]
    assert [c["choices"][0]["text"] for c in ours] == [" word0", " word1", " word2", " word3"]
    assert [c["choices"][0]["finish_reason"] for c in ours] == [None, None, None, "stop"]
    assert len({c["task_id"] for c in others}) == 1
    assert others[-1]["choices"][0]["finish_reason"] == "stop"
    # The other task's finish arrives before ours: a client must not stop there.
    assert events.index(others[-1]) < events.index(ours[-1])
    assert events[-2]["task_id"] == first_task
    assert "usage" in events[-2]
    assert events[-1] == "[DONE]"


def test_no_done_ends_the_stream_cleanly_without_done() -> None:
    with RouterSim("--no-done") as router:
        events = read_stream(stream(router))
    with RouterSim("--no-done", "--no-usage") as router:
        bare = read_stream(stream(router))

    assert "[DONE]" not in events
    assert events[-1]["usage"]["completion_tokens"] == 8
    assert "[DONE]" not in bare
    assert bare[-1]["choices"][0]["finish_reason"] == "stop"


def test_body_only_and_path_only_refuse_the_other_form() -> None:
    with RouterSim("--body-only") as router:
        assert complete(router, "/api/v1/completions").status_code == 200
        assert_error(complete(router, "/api/v1/completions/1"), 404)
    with RouterSim("--path-only") as router:
        assert complete(router, "/api/v3/completions/1").status_code == 200
        assert_error(complete(router, "/api/v3/completions"), 404)


@pytest.mark.parametrize("shape", ["message", "detail"])
def test_error_shape_varies_the_error_body(shape: str) -> None:
    with RouterSim("--error-shape", shape) as router:
        response = get(router, "/api/v1/status", headers={})

    assert response.status_code == 401
    assert list(response.json()) == [shape]


# -- misbehaviour switches for the portal's defences -------------------------------------------


@pytest.mark.parametrize("code", [400, 413, 422, 429, 500, 503])
def test_status_answers_every_completion_with_that_status(code: int) -> None:
    with RouterSim("--status", str(code)) as router:
        assert_error(complete(router), code)
        assert_error(stream(router), code)
        # Health routes still answer: only completions are refused.
        assert get(router, "/api/v1/status").json()["requests_total"] == 2


def test_status_error_body_follows_the_error_shape() -> None:
    with RouterSim("--status", "422", "--error-shape", "detail") as router:
        response = complete(router)

    assert response.status_code == 422
    assert list(response.json()) == ["detail"]


def test_status_refuses_a_code_that_is_not_an_error() -> None:
    with pytest.raises(RuntimeError, match="HTTP error status"):
        RouterSim("--status", "200")


def test_usage_tokens_reports_that_count_whatever_was_sent() -> None:
    lie = 2**40
    with RouterSim("--usage-tokens", str(lie), "--chunks", "3") as router:
        body = complete(router).json()
        events = read_stream(stream(router))

    assert body["choices"][0]["text"] == " word0 word1 word2"
    assert body["usage"]["completion_tokens"] == lie
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + lie
    assert len(content_chunks(events)) == 3
    assert events[-2]["usage"]["completion_tokens"] == lie


def test_ignore_max_tokens_sends_more_than_was_asked() -> None:
    with RouterSim("--ignore-max-tokens", "--chunks", "6") as router:
        body = complete(router, max_tokens=2).json()
        events = read_stream(stream(router, max_tokens=2))

    assert body["choices"][0]["text"] == "".join(f" word{i}" for i in range(6))
    assert body["choices"][0]["finish_reason"] == "stop"
    assert len(content_chunks(events)) == 6
    assert events[-2]["usage"]["completion_tokens"] == 6


def test_sse_for_json_answers_a_json_request_with_a_stream() -> None:
    with RouterSim("--sse-for-json", "--chunks", "3") as router:
        response = complete(router, stream=False)
        events = read_stream(response)

    assert response.headers["Content-Type"] == "text/event-stream"
    assert [c["choices"][0]["text"] for c in content_chunks(events)] == [
        " word0",
        " word1",
        " word2",
    ]
    assert events[-1] == "[DONE]"


def test_stream_seconds_spreads_a_stream_over_that_long() -> None:
    with RouterSim("--stream-seconds", "1", "--chunks", "3") as router:
        started = time.monotonic()
        events = read_stream(stream(router))
        streamed_for = time.monotonic() - started

    assert len(content_chunks(events)) == 3
    assert events[-1] == "[DONE]"
    assert streamed_for >= 1  # a lower bound only: the answer may not be faster


def test_stream_seconds_trickles_a_json_answer() -> None:
    with RouterSim("--stream-seconds", "1", "--chunks", "3") as router:
        started = time.monotonic()
        response = complete(router)
        body = response.json()
        answered_in = time.monotonic() - started

    assert "Content-Length" not in response.headers
    assert body["choices"][0]["text"] == " word0 word1 word2"
    assert answered_in >= 0.9  # nine gaps of a tenth of a second


# -- capacity and the helper ------------------------------------------------------------------


def test_hundreds_of_concurrent_streams_all_complete() -> None:
    clients = 300

    def one_stream(router: RouterSim) -> str:
        events = read_stream(stream(router))
        assert events[-1] == "[DONE]"
        return "".join(c["choices"][0]["text"] for c in content_chunks(events))

    with RouterSim("--chunk-delay-ms", "20") as router:
        with ThreadPoolExecutor(max_workers=clients + 1) as pool:
            highest = pool.submit(_highest_in_flight, router, clients)
            texts = list(pool.map(one_stream, [router] * clients))
        status = get(router, "/api/v1/status").json()

    assert texts == ["".join(f" word{i}" for i in range(8))] * clients
    assert status["requests_total"] == clients
    # Served at once, not one at a time (then it would never see more than one).
    assert highest.result() > 10


def _highest_in_flight(router: RouterSim, total: int) -> int:
    """The most streams the simulator held at once, sampled until it served `total`."""
    highest = 0
    deadline = time.monotonic() + 120
    while True:
        status = get(router, "/api/v1/status").json()
        highest = max(highest, status["in_flight"])
        if status["requests_total"] >= total and status["in_flight"] == 0:
            return highest
        assert time.monotonic() < deadline


def test_router_sim_restarts_on_the_same_port() -> None:
    router = RouterSim()
    try:
        url = router.url
        router.stop()
        assert not router.running
        with pytest.raises(requests.exceptions.ConnectionError):
            get(router, "/api/v1/ping")

        router.start()
        assert router.url == url
        assert get(router, "/api/v1/ping").status_code == 200
    finally:
        router.stop()


def test_access_log_is_off_by_default_and_on_with_the_flag(sim: RouterSim) -> None:
    with RouterSim("--access-log") as router:
        get(router, "/api/v1/ping")
        time.sleep(0.1)
        logged = router.output()
    get(sim, "/api/v1/ping")

    assert "GET /api/v1/ping" in logged
    assert "/api/v1/ping" not in sim.output()
    assert sim.output().count("\n") == 1  # the start line only
