"""Bad input to /v1/ is refused with a 4xx in OpenAI's error shape, and changes nothing.

Never a 500 and never an HTML page. A request that fails authentication leaves no trace; an
authenticated one leaves exactly one usage record (outcome client_error, by design) and
consumes no limit.

Every case goes over HTTP to the portal as production serves it (gunicorn, gevent workers,
the lean /v1/ stack, the batched usage writer: tests/servehelpers.py), so what gunicorn
refuses itself (oversized headers, malformed Content-Length or request lines) is covered
too. What an HTTP client cannot send (invalid UTF-8 on the wire, wrong Content-Length,
chunked bodies, a bad Host) goes over a raw socket.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import socket
import time
from dataclasses import dataclass, field

import pytest

from apikeys import keyformat
from tests.routersim import RouterSim
from tests.servehelpers import DbReader, Gunicorn, provision

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODEL = "cortensor/llama-3.1-8b"
CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
COMPLETION_BODY = {"model": MODEL, "prompt": "Once upon", "max_tokens": 4}
# The served portal's default (MAX_REQUEST_BYTES): the tests never change its settings.
MAX_REQUEST_BYTES = 1_048_576
EMAIL = "bad-input@example.com"


# --- what "refused, nothing changed" means ---------------------------------------------------


def assert_openai_error(
    status: int,
    content_type: str,
    body: bytes,
    *,
    expected: int | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict:
    text = body.decode("utf-8", "replace")
    assert 400 <= status < 500, f"{status}: {text[:300]}"
    if expected is not None:
        assert status == expected, text[:300]
    assert content_type.startswith("application/json"), (content_type, text[:300])
    assert "<html" not in text.lower()
    data = json.loads(body)
    assert set(data) == {"error"}
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) >= 15, error
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param), error
    return error


def refused(response, **kwargs) -> dict:
    return assert_openai_error(
        response.status_code, response.get("Content-Type", ""), response.content, **kwargs
    )


# --- the served portal, and a client for it -----------------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    key: str
    database_url: str
    db: DbReader  # the battery's ledgers poll the served database every 10 ms
    sent: int = 0  # requests sent to the served portal so far (any client, any key)
    markers: int = 0  # the ledgers' markers so far: each one record of the served key
    # (requests sent, records) when a ledger last found every record written: the next ledger
    # starts from there if nothing was sent since (no marker of its own to wait for). Never
    # a record missed: anything written after it shows in the next ledger's count.
    settled: tuple[int, int] | None = None


@pytest.fixture(scope="module")
def served():
    sim = RouterSim()
    database_url, key = provision(sim, email=EMAIL)
    # The battery sends a few hundred refused requests from one key within a minute, far past
    # production's per-key cap on refused requests (tests/test_usage_lifecycle.py holds that
    # cap); here every case must reach the validation it checks.
    server = Gunicorn(database_url=database_url, USAGE_REFUSED_PER_MINUTE="1000000")
    db = DbReader(database_url)
    yield Served(url=server.url, port=server.port, key=key, database_url=database_url, db=db)
    db.close()
    server.stop()
    sim.stop()


# The served portal throttles bad keys per client address (30 a minute): each test speaks
# from a loopback address of its own, as distinct clients would.
_source_addresses = (f"127.0.{i // 250}.{i % 250 + 2}" for i in itertools.count())


@dataclass
class Response:
    status_code: int
    headers: dict
    content: bytes

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


class Client:
    """The calls of Django's test client these tests make (`served_client.post(path, data,
    content_type=..., HTTP_AUTHORIZATION=...)`), made over HTTP to the served portal."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.source = next(_source_addresses)

    def generic(self, method, path, data=b"", content_type=None, **extra) -> Response:
        headers = {}
        for name, value in extra.items():
            assert name.startswith("HTTP_"), name
            header = name[5:].replace("_", "-").title()
            headers[header] = value.encode() if isinstance(value, str) else value
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        elif isinstance(data, str):
            data = data.encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
        self.served.sent += 1
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.served.port, timeout=60, source_address=(self.source, 0)
        )
        try:
            conn.request(method.upper(), path, body=data or None, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, content=body)

    def get(self, path, **extra):
        return self.generic("GET", path, **extra)

    def post(self, path, data=b"", content_type="application/json", **extra):
        return self.generic("POST", path, data, content_type, **extra)

    def put(self, path, data=b"", content_type="application/json", **extra):
        return self.generic("PUT", path, data, content_type, **extra)

    def patch(self, path, data=b"", content_type="application/json", **extra):
        return self.generic("PATCH", path, data, content_type, **extra)

    def delete(self, path, data=b"", content_type="application/json", **extra):
        return self.generic("DELETE", path, data, content_type, **extra)


@pytest.fixture
def served_client(served):
    return Client(served)


@pytest.fixture
def served_key(served):
    """(no ApiKey object in this process, the served key's raw secret)."""
    return None, served.key


@dataclass
class Ledger:
    """The served key's usage records and limit counters before a request, to compare with
    after it.

    The served portal writes records in batches, a few tens of ms after answering. A record
    that should not exist cannot be waited for, so each check first sends a marker (a request
    with an empty body, itself one client_error record) and waits for the marker's record:
    one worker writes its records in order, so by then any record of the request checked is
    in the table too (and a record that should exist is found at once, not after a wait of
    its own)."""

    served: Served
    client: Client
    records: int = 0
    counters: dict = field(default_factory=dict)

    def __post_init__(self):
        settled = self.served.settled
        if settled is not None and settled[0] == self.served.sent:
            self.records = settled[1]
        else:
            self.records = self._settled_count()
        self.counters = self.used()

    def used(self) -> dict:
        settled = self.served.settled
        answer = self.client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {self.served.key}")
        if settled is not None and settled[0] == self.served.sent - 1:
            # A read of the counters, not a request that is recorded (were it recorded, the
            # next ledger's count would show it: the check in `__post_init__` is never blind).
            self.served.settled = (self.served.sent, settled[1])
        assert answer.status_code == 200, answer.content
        limits = json.loads(answer.content)["limits"]
        return {name: entry["used"] for name, entry in limits.items()}

    def _rows(self, where: str = "TRUE", params=(), *, columns: str = "r.*") -> list[dict]:
        return self.served.db.query(
            f"SELECT {columns} FROM metering_usagerecord r JOIN accounts_user u "
            f"ON u.id = r.user_id WHERE u.email = %s AND {where}",
            [EMAIL, *params],
        )

    def _wait_for(self, request_id: str) -> dict:
        deadline = time.monotonic() + 30
        while not (rows := self._rows("r.request_id = %s", [request_id])):
            assert time.monotonic() < deadline, f"no usage record for {request_id}"
            time.sleep(0.01)
        (row,) = rows
        return row

    def _settled_count(self) -> int:
        """Records of real requests, once everything before now is written."""
        marker = self.client.post(CHAT, b"{}", HTTP_AUTHORIZATION=f"Bearer {self.served.key}")
        assert marker.status_code == 400, marker.content
        self._wait_for(marker["x-request-id"])
        self.served.markers += 1
        (row,) = self._rows(columns="count(*) AS n")
        records = row["n"] - self.served.markers
        self.served.settled = (self.served.sent, records)
        return records

    def assert_untouched(self):
        assert self._settled_count() == self.records
        assert self.used() == self.counters

    def assert_one_client_error(self, status: int, request_id: str, code: str):
        settled = self._settled_count()  # the marker: the request's own record is in by now
        record = self._wait_for(request_id)
        assert settled == self.records + 1
        assert record["outcome"] == "client_error"
        assert record["http_status"] == status
        assert record["error_code"] == code
        assert record["total_tokens"] == 0
        assert self.used() == self.counters


@pytest.fixture
def ledger(served, served_client):
    return Ledger(served=served, client=served_client)


@pytest.fixture
def api(served_client, served_key, ledger):
    """POST/GET as alice; each call asserts the refusal and exactly one client_error record."""
    _, raw = served_key

    class Api:
        def send(self, method, path, data=None, content_type="application/json", **extra):
            extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {raw}")
            if method == "get":
                return served_client.get(path, **extra)
            return getattr(served_client, method)(
                path, data=data, content_type=content_type, **extra
            )

        def refuse(self, method, path, data=None, content_type="application/json", **kwargs):
            expect = {k: kwargs.pop(k) for k in ("expected", "code", "param") if k in kwargs}
            response = self.send(method, path, data, content_type, **kwargs)
            error = refused(response, **expect)
            ledger.assert_one_client_error(
                response.status_code, response["x-request-id"], error["code"]
            )
            ledger.records += 1
            return error

    return Api()


def with_field(base: dict, path: tuple, value) -> dict:
    body = copy.deepcopy(base)
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


# --- the body ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"model": ',
        b"nul",
        b"[1,]",
        b"{'model': 'x'}",
        b'{"model": NaN}',
        b'{"a": Infinity}',
        b"\x00\x01",
        b'{"model": "a"} trailing',
        b"1" * 5000,
    ],
    ids=[
        "open",
        "cut",
        "nul",
        "trailing-comma",
        "single-quotes",
        "nan",
        "infinity",
        "binary",
        "trailing-data",
        "huge-int",
    ],
)
def test_malformed_json(api, path, raw):
    error = api.refuse("post", path, raw, expected=400)
    assert "JSON" in error["message"] or "object" in error["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
    ],
)
def test_wrong_content_type(api, content_type):
    error = api.refuse(
        "post",
        CHAT,
        json.dumps(CHAT_BODY).encode(),
        content_type=content_type,
        expected=400,
        code="unsupported_media_type",
    )
    assert "application/json" in error["message"]


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_empty_body(api, path):
    api.refuse("post", path, b"", expected=400, param="model")


@pytest.mark.parametrize(
    "body",
    [[], [CHAT_BODY], "text", 42, True, None],
    ids=["array", "array-of-object", "string", "number", "bool", "null"],
)
def test_body_that_is_not_an_object(api, body):
    error = api.refuse("post", CHAT, json.dumps(body).encode(), expected=400)
    assert "object" in error["message"]


def test_body_over_the_limit_is_413_before_anything_is_read(served_client, served_key, ledger):
    _, raw = served_key
    limit = MAX_REQUEST_BYTES
    body = json.dumps({**CHAT_BODY, "padding": "x" * limit}).encode()
    assert len(body) > limit

    response = served_client.post(
        CHAT, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )

    error = refused(response, expected=413, code="request_too_large")
    assert str(limit) in error["message"]
    ledger.assert_untouched()  # refused at the door: nothing read, nothing metered


def test_body_at_the_limit_is_read(api):
    body = json.dumps({**CHAT_BODY, "model": "nope/x"}).encode()
    body = body[:-1] + b', "pad": "' + b"x" * (MAX_REQUEST_BYTES - len(body) - 11) + b'"}'
    assert len(body) == MAX_REQUEST_BYTES
    api.refuse("post", CHAT, body, expected=404, code="model_not_found")


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize(
    "opener,closer", [(b"[", b"]"), (b'{"a":', b"}")], ids=["arrays", "objects"]
)
def test_deep_nesting_is_a_400_not_a_recursion_error(api, depth, opener, closer):
    nested = opener * depth + b"1" + closer * depth
    body = b'{"model": "' + MODEL.encode() + b'", "messages": ' + nested + b"}"
    api.refuse("post", CHAT, body, expected=400)


def test_deep_nesting_as_the_whole_body(api):
    api.refuse("post", COMPLETIONS, b"[" * 100_000 + b"]" * 100_000, expected=400)


@pytest.mark.parametrize("count", [2049, 20_000])
def test_huge_number_of_messages(api, count):
    body = {**CHAT_BODY, "messages": [{"role": "user", "content": ""}] * count}
    error = api.refuse("post", CHAT, json.dumps(body).encode(), expected=400, param="messages")
    assert str(count) in error["message"]


@pytest.mark.parametrize(
    "path,field,value",
    [
        (CHAT, "stop", ["x"] * 50_000),
        (COMPLETIONS, "prompt", ["x"] * 50_000),
        (
            CHAT,
            "messages",
            [{"role": "user", "content": [{"type": "text", "text": "x"}] * 20_000}, []],
        ),
    ],
    ids=["stop", "prompt", "content-parts"],
)
def test_huge_arrays_in_other_fields(api, path, field, value):
    body = {**(CHAT_BODY if path == CHAT else COMPLETION_BODY), field: value}
    api.refuse("post", path, json.dumps(body).encode(), expected=400, param=field)


# --- wrong types in every field -----------------------------------------------------------------

# Values of every JSON type; each field below lists those that are wrong for it.
T, ONE, NEG, F, S, E, L, D, LI, DI, BIG = (
    True,
    1,
    -1,
    1.5,
    "x",
    "",
    [],
    {},
    [1],
    {"a": 1},
    10**30,
)

CHAT_WRONG = {
    ("model",): [T, ONE, F, E, L, D, LI, " ", "a" * 129, "a\x00b", "\ud800", "nope/x"],
    ("messages",): [T, ONE, F, S, E, L, D, LI, DI],
    ("messages", 0): [T, ONE, F, S, L, D, LI, DI],
    ("messages", 0, "role"): [T, ONE, F, S, E, L, D, LI, DI, "tool", "function"],
    ("messages", 0, "content"): [
        T,
        ONE,
        F,
        D,
        LI,
        DI,
        [{"type": "image_url"}],
        [{"type": 1}],
        [{"type": "text", "text": 1}],
        None,
    ],
    ("messages", 0, "name"): [T, ONE, F, L, D, LI, "a\nb", "n" * 257, "\ud800"],
    ("max_tokens",): [T, F, S, E, L, D, NEG, 0, BIG, 2**63, 1025],
    ("max_completion_tokens",): [T, F, S, L, D, NEG, 0, BIG],
    ("temperature",): [T, S, L, D, NEG, 2.5, BIG],
    ("top_p",): [T, S, L, D, NEG, F],
    ("presence_penalty",): [T, S, L, D, 3, BIG],
    ("frequency_penalty",): [T, S, L, D, -3, BIG],
    ("seed",): [T, F, S, L, D, BIG],
    ("stop",): [T, ONE, F, D, LI, ["a", 1], ["a"] * 5],
    ("user",): [T, ONE, F, L, D, "u" * 257],
    ("n",): [T, 2, 0, NEG, F, S, L, D],
    ("stream",): [ONE, F, S, E, L, D, LI],
    ("stream_options",): [T, ONE, F, S, L, LI],
    ("logprobs",): [T, ONE, S, LI, DI],
    ("response_format",): [T, ONE, S, D, DI, {"type": "json_object"}],
    ("tools",): [T, ONE, S, LI, DI],
    ("tool_choice",): [T, ONE, S],
    ("functions",): [LI, DI],
    ("audio",): [T, DI],
}
COMPLETION_WRONG = {
    ("model",): [T, ONE, F, E, L, D, LI, "nope/x"],
    ("prompt",): [T, ONE, F, L, D, LI, ["a", "b"], [1], None],
    ("max_tokens",): [T, F, S, L, D, NEG, 0, BIG],
    ("temperature",): [T, S, L, D, NEG, BIG],
    ("stop",): [T, ONE, D, LI],
    ("stream",): [ONE, S, L, D],
    ("echo",): [ONE, F, S, L, D],
    ("suffix",): [T, ONE, S, LI],
    ("best_of",): [T, 2, 0, S, L],
    ("n",): [T, 2, S],
    ("logprobs",): [T, 5, S],
}


def _cases(table):
    for path, values in table.items():
        for value in values:
            yield pytest.param(path, value, id=f"{'.'.join(map(str, path))}={value!r:.20}")


def _expected_param(path: tuple) -> str:
    param = str(path[0])
    for part in path[1:]:
        param += f"[{part}]" if isinstance(part, int) else f".{part}"
    return param


@pytest.mark.parametrize("path,value", list(_cases(CHAT_WRONG)))
def test_chat_wrong_type(api, path, value):
    base = CHAT_BODY
    if path == ("stream_options",):
        base = {**CHAT_BODY, "stream": True}  # stream_options alone is refused for that reason
    body = with_field(base, path, value)
    api.refuse("post", CHAT, json.dumps(body).encode(), param=_expected_param(path))


@pytest.mark.parametrize("path,value", list(_cases(COMPLETION_WRONG)))
def test_completion_wrong_type(api, path, value):
    body = with_field(COMPLETION_BODY, path, value)
    api.refuse("post", COMPLETIONS, json.dumps(body).encode(), param=_expected_param(path))


@pytest.mark.parametrize("value", [-1, 0, 10**9, 10**100, 1e308, 2**63, "100", 1025])
def test_negative_or_absurd_max_tokens(api, value):
    body = {**CHAT_BODY, "max_tokens": value}
    error = api.refuse("post", CHAT, json.dumps(body).encode(), expected=400, param="max_tokens")
    assert "max_tokens" in error["message"]


def test_context_overflow_is_a_400(api):
    body = {**COMPLETION_BODY, "prompt": "word " * 20_000, "max_tokens": 1024}
    api.refuse(
        "post", COMPLETIONS, json.dumps(body).encode(), expected=400, code="context_length_exceeded"
    )


# --- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "nope",
        "cortensor/unknown",
        "../../etc/passwd",
        "a" * 128,
        "модель",
        "cortensor/llama-3.1-8b ",
    ],
)
def test_unknown_model(api, model):
    body = {**CHAT_BODY, "model": model}
    error = api.refuse(
        "post", CHAT, json.dumps(body).encode(), expected=404, code="model_not_found", param="model"
    )
    assert "/v1/models" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/nope",
        "/v1/models/cortensor/unknown",
        "/v1/models/%00",
        "/v1/models/" + "a" * 300,
        "/v1/nothing",
        "/v1/models/",
        "/v1/chat/completions/",
    ],
)
def test_unknown_model_or_route_is_json_404(served_client, served_key, ledger, path):
    _, raw = served_key
    response = served_client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}")
    refused(response, expected=404)
    ledger.assert_untouched()  # GETs are not metered


@pytest.mark.parametrize(
    "method,path", [("get", CHAT), ("put", "/v1/models"), ("delete", COMPLETIONS), ("patch", CHAT)]
)
def test_wrong_method_is_json_405(served_client, served_key, ledger, method, path):
    _, raw = served_key
    response = getattr(served_client, method)(path, HTTP_AUTHORIZATION=f"Bearer {raw}")
    refused(response, expected=405, code="method_not_allowed")
    ledger.assert_untouched()


# --- keys of every wrong shape -----------------------------------------------------------------


def _unknown_key() -> str:
    return keyformat.new_key(keyformat.new_public_id())


BAD_AUTHORIZATION = {
    "empty": lambda raw: "",
    "bearer-alone": lambda raw: "Bearer",
    "bearer-space": lambda raw: "Bearer ",
    "basic": lambda raw: "Basic x",
    "basic-key": lambda raw: f"Basic {raw}",
    "token-scheme": lambda raw: f"Token {raw}",
    "no-scheme": lambda raw: raw,
    "unicode": lambda raw: "Bearer ключ-🔑",
    "unicode-right-length": lambda raw: "Bearer " + "ж" * len(raw),
    "10kb": lambda raw: "Bearer " + "k" * 10_240,
    "prefix-wrong-length": lambda raw: f"Bearer {raw}x",
    "prefix-short": lambda raw: "Bearer ctsk_abc",
    "unknown-id": lambda raw: f"Bearer {_unknown_key()}",
    "wrong-secret": lambda raw: f"Bearer {keyformat.new_key(raw.split('_')[1])}",
    "two-keys": lambda raw: f"Bearer {raw} {raw}",
    "sql": lambda raw: "Bearer ' OR 1=1 --",
    "nul": lambda raw: f"Bearer {raw[:-1]}\x00",
}


@pytest.mark.parametrize("shape", list(BAD_AUTHORIZATION))
@pytest.mark.parametrize("path", [CHAT, "/v1/models", "/v1/usage"])
def test_keys_of_every_wrong_shape(served_client, served_key, ledger, shape, path):
    _, raw = served_key
    header = BAD_AUTHORIZATION[shape](raw)
    if path == CHAT:
        response = served_client.post(
            path, CHAT_BODY, content_type="application/json", HTTP_AUTHORIZATION=header
        )
    else:
        response = served_client.get(path, HTTP_AUTHORIZATION=header)
    if "\x00" in header:
        # NUL is not allowed in a header value (RFC 9110): gunicorn refuses the request itself.
        refused(response, expected=400, code="invalid_header")
    else:
        refused(response, expected=401, code="invalid_api_key")
    ledger.assert_untouched()


def test_no_authorization_header_with_a_bad_body(served_client, ledger):
    response = served_client.post(CHAT, b"{", content_type="application/json")
    refused(response, expected=401, code="invalid_api_key")
    ledger.assert_untouched()


# --- on the wire: what the test client cannot send ----------------------------------------------


@dataclass
class Raw:
    status: int
    headers: dict
    body: bytes

    def refused(self, **kwargs) -> dict:
        return assert_openai_error(
            self.status, self.headers.get("content-type", ""), self.body, **kwargs
        )


def raw_http(server: Served, request: bytes, *, half_close: bool = False) -> Raw:
    server.sent += 1
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=20, source_address=(next(_source_addresses), 0)
    ) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Raw(status=int(status_line.split()[1]), headers=headers, body=body)


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def request_bytes(
    method: str,
    path: bytes,
    *,
    headers: list[bytes] = (),
    body: bytes = b"",
    length: bytes | None = None,
    host: bytes = b"localhost",
) -> bytes:
    """An HTTP/1.1 request; Content-Length is the body's unless `length` says otherwise
    (b"": no Content-Length header at all)."""
    lines = [
        method.encode() + b" " + path + b" HTTP/1.1",
        b"Host: " + host,
        b"Connection: close",
        *headers,
    ]
    if length is None and body:
        length = str(len(body)).encode()
    if length:
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture
def wire(served, ledger):
    """The served portal, alice's Authorization header line, and a ledger to compare with."""
    return served, b"Authorization: Bearer " + served.key.encode(), ledger


JSON_TYPE = b"Content-Type: application/json"


def test_invalid_utf8_body(wire):
    server, auth, ledger = wire
    body = (
        b'{"model": "'
        + MODEL.encode()
        + b'", "messages": [{"role": "user", "content": "\xff\xfe\xc3("}]}'
    )
    response = raw_http(
        server, request_bytes("POST", CHAT.encode(), headers=[auth, JSON_TYPE], body=body)
    )
    error = response.refused(expected=400)
    assert "JSON" in error["message"]
    ledger.assert_one_client_error(400, response.headers["x-request-id"], error["code"])


def test_invalid_utf8_in_the_key_and_the_path(wire):
    server, auth, ledger = wire
    bad_key = raw_http(
        server, request_bytes("GET", b"/v1/models", headers=[b"Authorization: Bearer \xff\xfe\x80"])
    )
    bad_path = raw_http(server, request_bytes("GET", b"/v1/models/\xff\xfe", headers=[auth]))
    bad_key.refused(expected=401, code="invalid_api_key")
    # A request target must be ASCII (RFC 9112): gunicorn refuses the request line itself.
    bad_path.refused(expected=400, code="invalid_request_line")
    ledger.assert_untouched()


def test_unicode_key_on_the_wire(wire):
    server, _, ledger = wire
    response = raw_http(
        server,
        request_bytes("GET", b"/v1/models", headers=["Authorization: Bearer ключ🔑".encode()]),
    )
    response.refused(expected=401, code="invalid_api_key")
    ledger.assert_untouched()


@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Padding: " + b"a" * 40_000],
        [b"Authorization: Bearer " + b"k" * 20_000],
        [f"X-Pad-{i}: ".encode() + b"a" * 700 for i in range(60)],
    ],
    ids=["one-huge-header", "huge-key", "many-headers"],
)
def test_oversized_headers_are_431(wire, headers):
    server, auth, ledger = wire
    extra = headers if headers[0].startswith(b"Authorization") else [auth, *headers]
    response = raw_http(
        server,
        request_bytes(
            "POST", CHAT.encode(), headers=[*extra, JSON_TYPE], body=json.dumps(CHAT_BODY).encode()
        ),
    )
    response.refused(expected=431, code="headers_too_large")
    ledger.assert_untouched()


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b"0x10"])
def test_malformed_content_length(wire, length):
    server, auth, ledger = wire
    response = raw_http(
        server,
        request_bytes(
            "POST",
            CHAT.encode(),
            headers=[auth, JSON_TYPE],
            body=json.dumps(CHAT_BODY).encode(),
            length=length,
        ),
    )
    response.refused(expected=400, code="invalid_content_length")
    ledger.assert_untouched()


@pytest.mark.parametrize(
    "sent,claimed", [(1.0, 0.5), (0.5, 1.0)], ids=["shorter-than-the-body", "longer-than-the-body"]
)
def test_content_length_that_does_not_match_the_body(wire, sent, claimed):
    """Claimed short: the JSON is cut there. Claimed long: the client stops sending half-way
    and closes its side; either way the server parses what it has, refuses it, and does
    not hang."""
    server, auth, ledger = wire
    body = json.dumps(CHAT_BODY).encode()
    response = raw_http(
        server,
        request_bytes(
            "POST",
            CHAT.encode(),
            headers=[auth, JSON_TYPE],
            body=body[: int(len(body) * sent)],
            length=str(int(len(body) * claimed)).encode(),
        ),
        half_close=True,
    )
    error = response.refused(expected=400)
    assert "JSON" in error["message"]
    ledger.assert_one_client_error(400, response.headers["x-request-id"], error["code"])


def test_content_length_over_the_limit_is_413_unread(wire):
    server, auth, ledger = wire
    claimed = str(MAX_REQUEST_BYTES * 100).encode()
    response = raw_http(
        server,
        request_bytes("POST", CHAT.encode(), headers=[auth, JSON_TYPE], body=b"{}", length=claimed),
        half_close=True,
    )
    response.refused(expected=413, code="request_too_large")
    ledger.assert_untouched()


def test_chunked_body_is_411(wire):
    server, auth, ledger = wire
    body = json.dumps(CHAT_BODY).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    response = raw_http(
        server,
        request_bytes(
            "POST",
            CHAT.encode(),
            headers=[auth, JSON_TYPE, b"Transfer-Encoding: chunked"],
            body=chunked,
            length=b"",
        ),
        half_close=True,
    )
    response.refused(expected=411, code="length_required")
    ledger.assert_untouched()


def test_bad_host_header_is_json_400(wire):
    server, auth, ledger = wire
    response = raw_http(
        server, request_bytes("GET", b"/v1/models", headers=[auth], host=b"evil.example.com")
    )
    response.refused(expected=400)
    ledger.assert_untouched()


# --- integers beyond their column, everywhere they are entered ---------------------------------

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Over the column, far over it, below the minimum, and not integers at all.
KEY_CAP_WRONG = [INT32_MAX + 1, 3_000_000_000, 2**63, 10**30, 0, -1, T, F, S, L, D]


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("value", KEY_CAP_WRONG, ids=repr)
def test_key_api_integers_beyond_their_column(client, alice, field, value):
    from apikeys.models import ApiKey

    client.force_login(alice)
    response = client.post(
        "/api/keys", {"name": "x", field: value}, content_type="application/json"
    )

    refused(response, expected=400, param=field)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
def test_key_api_takes_the_column_maximum(client, alice, field):
    client.force_login(alice)
    response = client.post(
        "/api/keys", {"name": "x", field: INT32_MAX}, content_type="application/json"
    )
    assert response.status_code == 201
    assert response.json()[field] == INT32_MAX


def _config_with(section: str, field: str, value) -> dict:
    plan = {"name": "p", "models": ["*"]}
    router = {"url": "http://10.0.0.5:5010", "session_id": 1}
    model = {"id": "m/x", "pool": "default"}
    target = {"plans": plan, "routers": router, "models": model}[section]
    target[field] = value
    return {
        "plans": [plan],
        "pools": [{"name": "default", "routers": [router]}],
        "models": [model],
    }


CONFIG_INTEGERS = [
    *(
        ("plans", f, INT32_MAX + 1)
        for f in (
            "requests_per_minute",
            "tokens_per_minute",
            "requests_per_day",
            "requests_per_month",
            "max_concurrent_requests",
        )
    ),
    ("plans", "tokens_per_day", INT64_MAX + 1),
    ("plans", "tokens_per_month", 10**30),
    ("routers", "session_id", INT32_MAX + 1),
    ("routers", "weight", 3_000_000_000),
    *(
        ("models", f, INT32_MAX + 1)
        for f in (
            "max_tokens",
            "default_max_tokens",
            "context_length",
            "request_timeout",
            "sort_order",
        )
    ),
    ("models", "sort_order", -(2**31) - 1),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("section", "field", "value"), CONFIG_INTEGERS)
def test_apply_config_integers_beyond_their_column(section, field, value):
    from accounts.models import Plan
    from catalog.models import CatalogModel
    from catalog.services import ConfigInvalid, catalog_apply_config

    with pytest.raises(ConfigInvalid, match=rf"{field}: expected an integer"):
        catalog_apply_config(config=_config_with(section, field, value))
    assert not Plan.objects.exists() and not CatalogModel.objects.exists()


PLAN_FORM = {"name": "p", "all_models": "on"}
ADMIN_INTEGER_FORMS = [
    ("/admin/accounts/plan/add/", PLAN_FORM, "requests_per_minute", INT32_MAX + 1),
    ("/admin/accounts/plan/add/", PLAN_FORM, "tokens_per_day", INT64_MAX + 1),
    ("/admin/catalog/catalogmodel/add/", None, "max_tokens", INT32_MAX + 1),
    ("/admin/catalog/router/add/", None, "session_id", INT32_MAX + 1),
    ("/admin/catalog/router/add/", None, "weight", 3_000_000_000),
]


@pytest.mark.parametrize(("path", "data", "field", "value"), ADMIN_INTEGER_FORMS)
def test_admin_forms_refuse_integers_beyond_their_column(
    client, staff, catalog, path, data, field, value
):
    client.force_login(staff)
    if data is None:  # a complete form as the admin renders it, then one field too big
        data = _admin_form_defaults(client.get(path).content.decode())
        data.update(pool=catalog["pool"].pk, public_id="m/new", base_url="http://10.0.0.9:1")
    data = {**data, field: str(value)}

    response = client.post(path, data)

    assert response.status_code == 200  # the form again, not a 500
    assert "Ensure this value is less than or equal to" in response.content.decode()


def _admin_form_defaults(html: str) -> dict:
    import re

    values = dict(re.findall(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"', html))
    values.pop("csrfmiddlewaretoken", None)
    return values


# --- Anthropic's Messages API: the same refusals, in Anthropic's error shape --------------------

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
MESSAGE_BODY = {
    "model": MODEL,
    "max_tokens": 4,
    "messages": [{"role": "user", "content": "Hi"}],
    "metadata": {"user_id": "u1"},
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
}


def assert_anthropic_error(
    status: int,
    headers: dict,
    body: bytes,
    *,
    expected: int | None = None,
    mentions: str | None = None,
) -> dict:
    text = body.decode("utf-8", "replace")
    assert 400 <= status < 500, f"{status}: {text[:300]}"
    if expected is not None:
        assert status == expected, text[:300]
    assert headers.get("content-type", "").startswith("application/json"), text[:300]
    data = json.loads(body)
    assert set(data) == {"type", "error", "request_id"}, data
    assert data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == ANTHROPIC_TYPES[status], data
    assert isinstance(data["error"]["message"], str) and len(data["error"]["message"]) >= 15
    if mentions is not None:
        assert mentions in data["error"]["message"], data
    assert data["request_id"] == headers["request-id"] == headers["x-request-id"]
    return data["error"]


def anthropic_refused(response, **kwargs) -> dict:
    return assert_anthropic_error(
        response.status_code, response.headers, response.content, **kwargs
    )


@pytest.fixture
def messages_api(served_client, served_key, ledger):
    """POST to the Messages API with alice's x-api-key; each call asserts the refusal in
    Anthropic's shape and exactly one client_error record."""
    _, raw = served_key

    class Api:
        def refuse(self, path, data, *, content_type="application/json", **expect):
            response = served_client.post(
                path,
                data,
                content_type=content_type,
                HTTP_X_API_KEY=raw,
                HTTP_ANTHROPIC_VERSION="2023-06-01",
            )
            error = anthropic_refused(response, **expect)
            settled = ledger._settled_count()  # the marker: the request's record is in by now
            record = ledger._wait_for(response["request-id"])
            assert record["endpoint"] == "messages"
            assert record["outcome"] == "client_error"
            assert record["http_status"] == response.status_code
            assert record["total_tokens"] == 0
            ledger.records += 1
            assert settled == ledger.records
            assert ledger.used() == ledger.counters
            return error

    return Api()


@pytest.mark.parametrize(
    "raw", [b"{", b"nul", b"[1,]", b'{"model": NaN}', b"\x00\x01", b"1" * 5000, b""]
)
def test_messages_malformed_body(messages_api, raw):
    messages_api.refuse(MESSAGES, raw, expected=400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_messages_wrong_content_type(messages_api, content_type):
    error = messages_api.refuse(
        MESSAGES, json.dumps(MESSAGE_BODY).encode(), content_type=content_type, expected=400
    )
    assert "application/json" in error["message"]


@pytest.mark.parametrize("body", [[], [MESSAGE_BODY], "text", 42, True, None])
def test_messages_body_that_is_not_an_object(messages_api, body):
    messages_api.refuse(MESSAGES, json.dumps(body).encode(), expected=400, mentions="object")


def test_messages_deep_nesting_and_huge_arrays(messages_api):
    nested = b"[" * 100_000 + b"1" + b"]" * 100_000
    messages_api.refuse(MESSAGES, b'{"model": "x", "messages": ' + nested + b"}", expected=400)
    many = {**MESSAGE_BODY, "messages": [{"role": "user", "content": ""}] * 2049}
    messages_api.refuse(MESSAGES, json.dumps(many).encode(), expected=400, mentions="2049")
    stops = {**MESSAGE_BODY, "stop_sequences": ["x"] * 50_000}
    messages_api.refuse(MESSAGES, json.dumps(stops).encode(), mentions="stop_sequences")


MESSAGES_WRONG = {
    ("model",): [T, ONE, F, E, L, D, LI, " ", "a" * 129, "a\x00b", "\ud800"],
    ("messages",): [T, ONE, F, S, E, L, D, LI, DI],
    ("messages", 0): [T, ONE, F, S, L, D, LI, DI],
    ("messages", 0, "role"): [T, ONE, F, S, E, L, D, "system", "tool", None],
    ("messages", 0, "content"): [
        T,
        ONE,
        F,
        D,
        LI,
        DI,
        None,
        [{"type": "image", "source": {}}],
        [{"type": "document", "source": {}}],
        [{"type": "tool_result", "content": "x"}],
        [{"type": 1}],
        [{"type": "text", "text": 1}],
    ],
    ("system",): [T, ONE, F, D, DI, [1], [{"type": "image"}]],
    ("max_tokens",): [None, T, F, S, E, L, D, NEG, 0, BIG, 2**63, 1025],
    ("temperature",): [T, S, L, D, NEG, F, BIG],
    ("top_p",): [T, S, L, D, NEG, F],
    ("top_k",): [T, F, S, L, D, NEG, BIG],
    ("stop_sequences",): [T, ONE, S, D, LI, ["a", 1], ["a"] * 5, ["x" * 65]],
    ("stream",): [ONE, F, S, E, L, D, LI],
    ("metadata",): [T, ONE, S, L, LI],
    ("metadata", "user_id"): [T, ONE, F, L, D, "u" * 257],
    ("tools",): [T, ONE, S, LI, DI],
    ("tool_choice",): [T, ONE, S, DI],
    ("thinking",): [T, ONE, S, DI],
}


@pytest.mark.parametrize("path,value", list(_cases(MESSAGES_WRONG)))
def test_messages_wrong_type(messages_api, path, value):
    body = with_field(MESSAGE_BODY, path, value)
    if value is None and path == ("max_tokens",):
        del body["max_tokens"]  # missing: required
    messages_api.refuse(
        MESSAGES, json.dumps(body).encode(), expected=400, mentions=".".join(map(str, path))
    )


def test_messages_unknown_model_and_count_tokens_refusals(messages_api, served_client, served_key):
    body = {**MESSAGE_BODY, "model": "cortensor/unknown"}
    messages_api.refuse(MESSAGES, json.dumps(body).encode(), expected=404, mentions="unknown")
    # count_tokens is not metered: refused the same way, with no record.
    _, raw = served_key
    for data, status in ((body, 404), ({"model": MODEL}, 400), (b"{", 400)):
        response = served_client.post(COUNT_TOKENS, data, HTTP_X_API_KEY=raw)
        anthropic_refused(response, expected=status)


def test_messages_body_over_the_limit_is_413_unread(served_client, served_key, ledger):
    _, raw = served_key
    body = json.dumps({**MESSAGE_BODY, "padding": "x" * MAX_REQUEST_BYTES}).encode()
    response = served_client.post(MESSAGES, body, HTTP_X_API_KEY=raw)
    anthropic_refused(response, expected=413, mentions=str(MAX_REQUEST_BYTES))
    ledger.assert_untouched()


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_messages_wrong_method_is_405(served_client, served_key, ledger, method):
    _, raw = served_key
    response = getattr(served_client, method)(MESSAGES, HTTP_X_API_KEY=raw)
    anthropic_refused(response, expected=405)
    ledger.assert_untouched()


BAD_X_API_KEY = {
    "prefix-short": lambda raw: "ctsk_abc",
    "unknown-id": lambda raw: _unknown_key(),
    "wrong-secret": lambda raw: keyformat.new_key(raw.split("_")[1]),
    "bearer-inside": lambda raw: f"Bearer {raw}",
    "unicode": lambda raw: "ключ-🔑",
    "10kb": lambda raw: "k" * 10_240,
    "two-keys": lambda raw: f"{raw} {raw}",
}


@pytest.mark.parametrize("shape", list(BAD_X_API_KEY))
def test_messages_x_api_keys_of_every_wrong_shape(served_client, served_key, ledger, shape):
    _, raw = served_key
    response = served_client.post(MESSAGES, MESSAGE_BODY, HTTP_X_API_KEY=BAD_X_API_KEY[shape](raw))
    anthropic_refused(response, expected=401)
    ledger.assert_untouched()


@pytest.mark.parametrize("shape", ["empty", "basic-key", "no-scheme", "unknown-id", "sql"])
def test_messages_bearer_keys_of_every_wrong_shape(served_client, served_key, ledger, shape):
    _, raw = served_key
    header = BAD_AUTHORIZATION[shape](raw)
    response = served_client.post(MESSAGES, MESSAGE_BODY, HTTP_AUTHORIZATION=header)
    anthropic_refused(response, expected=401)
    ledger.assert_untouched()


def _anthropic_raw(response: Raw, **kwargs) -> dict:
    return assert_anthropic_error(response.status, response.headers, response.body, **kwargs)


def test_messages_refusals_before_django_are_anthropic_shaped(wire):
    """What gunicorn (431, a malformed Content-Length or header) and the request guard (411,
    413 unread, a bad Host) refuse before any view is in Anthropic's shape on /v1/messages."""
    server, _, ledger = wire
    auth = b"x-api-key: " + server.key.encode()
    body = json.dumps(MESSAGE_BODY).encode()
    path = MESSAGES.encode()
    cases = [
        (431, request_bytes("POST", path, headers=[auth, b"X-Pad: " + b"a" * 40_000], body=body)),
        (400, request_bytes("POST", path, headers=[auth, JSON_TYPE], body=body, length=b"1e3")),
        (400, request_bytes("POST", path, headers=[auth, b"x-api-key2: a\x00b"], body=body)),
        (
            411,
            request_bytes(
                "POST",
                path,
                headers=[auth, JSON_TYPE, b"Transfer-Encoding: chunked"],
                body=f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
                length=b"",
            ),
        ),
        (
            413,
            request_bytes(
                "POST",
                path,
                headers=[auth, JSON_TYPE],
                body=b"{}",
                length=str(MAX_REQUEST_BYTES * 100).encode(),
            ),
        ),
        (400, request_bytes("POST", path, headers=[auth, JSON_TYPE], body=body, host=b"evil.test")),
    ]
    for status, request in cases:
        _anthropic_raw(raw_http(server, request, half_close=True), expected=status)
    ledger.assert_untouched()
