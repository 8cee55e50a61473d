"""The router client (inference/router_http.py) against a scripted router on a real socket:
each way a router may frame its answer (Content-Length, chunked with awkward cuts and
trailers, up to the end of the connection), when a connection is reused and when it is not
(an answer not read to its end, an error, `Connection: close`), what a broken or silent
router raises, and TLS with certificate verification."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError, SSLError

from inference.router_http import RouterClient

WAIT = 10  # seconds a test waits for what it needs before it fails (never a sleep)


class Router:
    """Accepts connections; each request is answered with the next script in `answers`: bytes
    are sent (each its own send), a threading.Event is waited for, a function is called, None
    closes the connection.
    `requests` holds each request as received, `connections` counts accepted connections."""

    def __init__(self, *answers: list, tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            while True:
                request = self._read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                for item in self.answers.pop(0):
                    if item is None:
                        return
                    if isinstance(item, threading.Event):
                        assert item.wait(WAIT)
                    elif callable(item):
                        item()
                    else:
                        conn.sendall(item)
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(65536)
        return data

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def client() -> RouterClient:
    return RouterClient(user_agent="test")


def post(client: RouterClient, router: Router, **kwargs):
    kwargs.setdefault("read_timeout", WAIT)
    return client.request("POST", f"{router.url}/api/v1/completions", body=b'{"a":1}', **kwargs)


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"b":2}'


def test_a_request_is_one_send_with_its_headers_and_body(client):
    router = Router([OK])
    post(client, router, headers={"Authorization": "Bearer k", "Accept": "application/json"})
    (request,) = router.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v1/completions HTTP/1.1"
    port = router.url.rsplit(":", 1)[1]
    assert set(lines[1:]) == {
        f"Host: 127.0.0.1:{port}".encode(),
        b"Accept-Encoding: identity",
        b"User-Agent: test",
        b"Authorization: Bearer k",
        b"Accept: application/json",
        b"Content-Length: 7",
    }
    assert body == b'{"a":1}'


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(client):
    router = Router()
    with pytest.raises(ValueError):
        post(client, router, headers={"Authorization": "Bearer k\r\nX-Injected: 1"})
    assert router.connections == 0


def test_a_content_length_answer_is_read_whole_and_its_connection_reused(client):
    router = Router([OK[:40], OK[40:-3], OK[-3:]], [OK])
    response = post(client, router)
    assert (response.status, response.headers["content-type"]) == (200, "application/json")
    assert response.data == b'{"b":2}'
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


@pytest.mark.parametrize(
    "length",
    [b"Content-Length: 7, 7", b"Content-Length: 7\r\nContent-Length: 7"],
    ids=["one-line", "two-lines"],
)
def test_a_content_length_repeated_with_one_value_is_read_by_it(client, length):
    answer = b"HTTP/1.1 200 OK\r\n" + length + b'\r\n\r\n{"b":2}'
    router = Router([answer], [OK])
    assert post(client, router).data == b'{"b":2}'
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


@pytest.mark.parametrize(
    "length",
    [b"Content-Length: 5, 7", b"Content-Length: 7\r\nContent-Length: 5", b"Content-Length: 7,5,7"],
    ids=["one-line", "two-lines", "three-values"],
)
def test_a_content_length_with_differing_values_is_a_protocol_error(client, length):
    # A router (or something between) that sends two lengths leaves the body's end unknown:
    # reading by either could take the next answer's bytes as this one's.
    answer = b"HTTP/1.1 200 OK\r\n" + length + b'\r\n\r\n{"b":2}'
    router = Router([answer, None], [OK])
    with pytest.raises(ProtocolError):
        post(client, router)
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


def test_a_head_with_lines_ended_by_line_feeds_alone_is_read(client):
    # As http.client read it; the body's own blank line (here inside the JSON) is not the head's
    # end, though it came in the same packet.
    body = b'{"b":\n\n2}'
    answer = b"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 9\n\n" + body
    router = Router([answer], [OK])
    response = post(client, router)
    assert (response.status, response.headers["content-type"]) == (200, "application/json")
    assert response.data == body
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def test_a_chunked_answer_cut_anywhere_is_read_whole_with_its_trailers(client):
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    # cut inside a size line, inside the data, between data and its CRLF, inside the trailers
    cuts = [CHUNKED_HEAD + body[:1], body[1:6], body[6:8], body[8:20], body[20:33], body[33:]]
    router = Router(cuts, [OK])
    assert post(client, router).data == b"hello, world"
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


def test_many_small_chunks_in_one_send_are_read_whole(client):
    pieces = [str(i % 10).encode() for i in range(5000)]
    body = b"".join(b"1\r\n" + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    router = Router([CHUNKED_HEAD + body], [OK])
    assert post(client, router).data == b"".join(pieces)
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


def test_a_chunked_read_returns_what_has_come_without_waiting_for_more(client):
    """An SSE event must reach the client when it comes, not when the next one does: here the
    router sends the rest only after the client has read the first event."""
    first_read = threading.Event()
    router = Router(
        [CHUNKED_HEAD + b"9\r\ndata: 1\n", first_read, b"\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"]
    )
    response = post(client, router, preload_content=False)
    assert response.read1() == b"data: 1\n"  # the chunk's first bytes: the rest is not sent yet
    first_read.set()
    assert b"".join(response.stream()) == b"\ndata: 2\n\n"


def test_an_answer_without_length_ends_with_the_connection_which_is_not_reused(client):
    router = Router([b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it", None], [OK])
    assert post(client, router).data == b"all of it"
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


def test_a_connection_the_router_says_it_closes_is_not_reused(client):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    router = Router([closing], [OK])
    assert post(client, router).data == b"ok"
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade,Close", False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive", True),
        (b"HTTP/1.0 200 OK", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive", True),
    ],
    ids=["close-among-tokens", "1.1-keep-alive", "1.0", "1.0-keep-alive"],
)
def test_a_connection_is_kept_as_the_answers_version_and_connection_tokens_say(
    client, head, reused
):
    router = Router([head + b"\r\nContent-Length: 2\r\n\r\nok"], [OK])
    assert post(client, router).data == b"ok"
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == (1 if reused else 2)


def test_an_answer_not_read_to_its_end_closes_its_connection(client):
    sent = threading.Event()
    router = Router([CHUNKED_HEAD + b"3\r\nabc\r\n", sent], [OK])
    response = post(client, router, preload_content=False)
    assert response.read1() == b"abc"
    response.close()
    sent.set()
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


def test_a_status_line_without_a_reason_is_read(client):
    router = Router([b"HTTP/1.1 204\r\n\r\n"], [OK])
    response = post(client, router)
    assert (response.status, response.data) == (204, b"")
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


DONE = b"b\r\ndata: end\n\n\r\n"  # a stream's last event, its chunk
END = b"0\r\n\r\n"  # the chunked body's end, after it


def test_a_stream_closed_after_its_last_event_with_its_end_read_already_is_reused(client):
    router = Router([CHUNKED_HEAD + DONE + END], [OK])
    response = post(client, router, preload_content=False)
    assert response.read1(11) == b"data: end\n\n"  # up to the last event, as the reader stops
    response.close()
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


def test_a_stream_closed_after_its_last_event_reads_its_end_if_it_has_come(client):
    go, sent = threading.Event(), threading.Event()
    router = Router([CHUNKED_HEAD + DONE, go, END, sent.set], [OK])
    response = post(client, router, preload_content=False)
    assert response.read1() == b"data: end\n\n"
    go.set()
    assert sent.wait(WAIT)
    assert select.select([response._sock], [], [], WAIT)[0]  # arrived (the test's only wait)
    response.close()
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


def test_a_stream_closed_before_its_end_has_come_is_not_reused_and_close_does_not_wait(client):
    go = threading.Event()
    router = Router([CHUNKED_HEAD + DONE, go, END], [OK])
    response = post(client, router, preload_content=False)
    assert response.read1() == b"data: end\n\n"
    response.close()  # the router sends the end only after this returned
    go.set()
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


def test_an_interim_answer_is_skipped(client):
    router = Router([b"HTTP/1.1 100 Continue\r\n\r\n" + OK])
    response = post(client, router)
    assert (response.status, response.data) == (200, b'{"b":2}')


@pytest.mark.parametrize(
    "answer",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", None],
        [CHUNKED_HEAD + b"a\r\nshort", None],
        [CHUNKED_HEAD + b"zz\r\n", None],
        [CHUNKED_HEAD + b"3\r\nabcdef\r\n0\r\n\r\n", None],
    ],
    ids=["length", "chunked", "chunk-size", "chunk-too-long"],
)
def test_an_answer_cut_short_or_malformed_is_a_protocol_error(client, answer):
    router = Router(answer, [OK])
    response = post(client, router, preload_content=False)
    with pytest.raises(ProtocolError):
        b"".join(response.stream())
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


@pytest.mark.parametrize(
    "answer", [[None], [b"SSH-2.0-OpenSSH\r\n\r\n"]], ids=["closed", "not-http"]
)
def test_a_router_that_does_not_answer_in_http_is_a_protocol_error(client, answer):
    with pytest.raises(ProtocolError):
        post(client, Router(answer))


def test_a_silent_router_is_a_read_timeout_and_its_connection_is_dropped(client):
    done = threading.Event()
    router = Router([CHUNKED_HEAD + b"3\r\nabc\r\n", done], [OK])
    response = post(client, router, preload_content=False, read_timeout=0.2)
    assert response.read1() == b"abc"
    with pytest.raises(ReadTimeoutError):
        response.read1()
    done.set()
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 2


def test_a_router_connection_refused_is_a_new_connection_error(client):
    port = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}/x"
    port.close()
    with pytest.raises(NewConnectionError):
        client.request("POST", url, body=b"{}", connect_timeout=WAIT)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key


def _tls_server(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_an_https_router_whose_certificate_is_trusted_is_answered(client, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the only trusted certificate
    router = Router([OK], [OK], tls=_tls_server(certificate))
    assert post(client, router).data == b'{"b":2}'
    assert post(client, router).data == b'{"b":2}'
    assert router.connections == 1


def test_an_https_router_whose_certificate_is_not_trusted_is_refused_before_sending(
    client, certificate
):
    router = Router([OK], tls=_tls_server(certificate))
    with pytest.raises(SSLError):
        post(client, router)
    assert router.requests == []
