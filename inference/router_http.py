"""The portal's HTTP/1.1 client for routers: keep-alive connections per router, a request in
one send, the answer's head parsed with plain bytes operations, its body read as it arrives
(Content-Length, chunked, or up to the end of the connection).

urllib3 through http.client cost ~0.3 ms of a worker's CPU per router call, most of it not the
sockets: the URL parsed and a pool key built per request, header dicts, Timeout and Retry
objects, and the email package parsing the answer's headers (BENCHMARKS.md). This client does
the one thing the portal asks of a router. Its errors are urllib3's exception classes, so the
callers and the operators' logs (`reason=ProtocolError`, `NewConnectionError`) read as before.

A connection goes back to its router's pool only after its answer was read to the end, and is
checked before it is reused (core/sockets.py): one with unread data or closed by the router is
dropped. Nothing is ever sent twice: the caller decides what is retried."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator, Mapping
from http.client import BadStatusLine, RemoteDisconnected
from typing import Literal
from urllib.parse import quote, urlsplit

from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
    URLSchemeUnknown,
)

from core.sockets import readable_now

MAX_HEAD = 65536  # an answer's status line and headers together
MAX_LINE = 4096  # a chunk-size line or a trailer
MAX_IDLE = 2048  # idle connections kept per router
_READ = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What a path or query may hold unencoded (RFC 3986 pchar, '/', '?', and '%' as written).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_ILLEGAL_IN_HEADER = ("\r", "\n", "\0")


class RouterClient:
    """Connections to routers, one idle list per (scheme, host, port)."""

    def __init__(self, *, user_agent: str) -> None:
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        # URL -> its router's pool and the request's first lines; routers' URLs are few.
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._user_agent = user_agent
        self._tls: ssl.SSLContext | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        preload_content: bool = True,
        retries: Literal[False] = False,
    ) -> RouterResponse:
        """Send one request and read the answer's head; the body is read as the caller asks
        (all of it first with preload_content). `retries` is urllib3's argument, and can
        only be False: a router request is never sent twice (a completion would run twice)."""
        if retries is not False:
            raise ValueError("router requests are never retried")
        origin, start = self._target(method, url)
        lines = [start]
        for name, value in (headers or {}).items():
            if any(c in name or c in value for c in _ILLEGAL_IN_HEADER):
                raise ValueError(f"Invalid header {name!r}")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        sock = origin.get(connect_timeout)
        try:
            sock.settimeout(read_timeout)
            try:
                sock.sendall(b"".join(lines))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the router may have answered before it closed: read what it said
            except OSError as exc:
                raise ProtocolError("Connection aborted.", exc) from exc
            response = _read_head(sock, origin, url, read_timeout)
        except BaseException:
            sock.close()
            raise
        if preload_content:
            response.preload()
        return response

    def _target(self, method: str, url: str) -> tuple[_Origin, bytes]:
        key = f"{method} {url}"
        target = self._targets.get(key)
        if target is None:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in _DEFAULT_PORTS:
                raise URLSchemeUnknown(scheme)
            host = parts.hostname or ""
            port = parts.port or _DEFAULT_PORTS[scheme]
            origin = self._origins.get((scheme, host, port))
            if origin is None:
                tls = self._tls_context() if scheme == "https" else None
                origin = self._origins[(scheme, host, port)] = _Origin(host, port, tls)
            name = host.encode("idna").decode("ascii")
            if ":" in name:  # an IPv6 address
                name = f"[{name}]"
            if port != _DEFAULT_PORTS[scheme]:
                name = f"{name}:{port}"
            path = quote(parts.path or "/", safe=_PATH_SAFE)
            if parts.query:
                path += "?" + quote(parts.query, safe=_QUERY_SAFE)
            start = (
                f"{method} {path} HTTP/1.1\r\nHost: {name}\r\n"
                f"Accept-Encoding: identity\r\nUser-Agent: {self._user_agent}\r\n"
            ).encode("ascii")
            if len(self._targets) >= 4096:  # URLs come from the catalog; bounded all the same
                self._targets.clear()
            target = self._targets[key] = (origin, start)
        return target

    def _tls_context(self) -> ssl.SSLContext:
        """Certificates verified against the system's trust store, host names checked, as
        urllib3 did."""
        if self._tls is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        return self._tls


class _Origin:
    """One router's idle connections, the most recently used last (it is taken first)."""

    __slots__ = ("host", "idle", "port", "tls")

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.idle: list[socket.socket] = []

    def get(self, connect_timeout: float | None) -> socket.socket:
        idle = self.idle
        while idle:
            sock = idle.pop()
            if not readable_now(sock):
                return sock
            sock.close()  # unread data, or closed by the router: never reused
        return self._connect(connect_timeout)

    def put(self, sock: socket.socket) -> None:
        if len(self.idle) < MAX_IDLE:
            self.idle.append(sock)
        else:
            sock.close()

    def _connect(self, timeout: float | None) -> socket.socket:
        """A new connection, TLS included: every failure here is before anything was sent."""
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                f"Connection to {where} timed out. (connect timeout={timeout})"
            ) from exc
        except OSError as exc:
            message = f"Failed to establish a new connection to {where}: {exc}"
            raise NewConnectionError(None, message) from exc  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLError as exc:  # certificate verification failures included
            sock.close()
            raise SSLError(exc) from exc
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(
                f"TLS handshake with {where} timed out. (connect timeout={timeout})"
            ) from exc
        except OSError as exc:
            sock.close()
            message = f"Failed to establish a new connection to {where}: {exc}"
            raise NewConnectionError(None, message) from exc  # type: ignore[arg-type]
        return sock


def _read_head(
    sock: socket.socket, origin: _Origin, url: str, read_timeout: float | None
) -> RouterResponse:
    """The answer's status line and headers (informational 1xx answers skipped)."""
    data = b""
    while True:
        end, sep = data.find(b"\r\n\r\n"), 4
        bare = data.find(b"\n\n")  # lines ended by LF alone, which http.client accepted
        if bare >= 0 and (end < 0 or bare < end):
            end, sep = bare, 2
        if end < 0:
            if len(data) > MAX_HEAD:
                raise ProtocolError("Connection aborted.", BadStatusLine("headers too long"))
            try:
                chunk = sock.recv(_READ)
            except TimeoutError as exc:
                raise _read_timeout(url, read_timeout) from exc
            except OSError as exc:
                raise ProtocolError("Connection aborted.", exc) from exc
            if not chunk:
                raise ProtocolError(
                    "Connection aborted.",
                    RemoteDisconnected("Remote end closed connection without response"),
                )
            data += chunk
            continue
        lines = data[:end].split(b"\n")
        data = data[end + sep :]
        status_line = lines[0].rstrip(b"\r")
        version, code = [*status_line.split(None, 2), b"", b""][:2]
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise ProtocolError("Connection aborted.", BadStatusLine(repr(status_line)))
        status = int(code)
        if status < 100:
            raise ProtocolError("Connection aborted.", BadStatusLine(repr(status_line)))
        if status >= 200:
            break
    headers: dict[str, str] = {}
    last = ""
    for raw in lines[1:]:
        line = raw.rstrip(b"\r").decode("latin-1")
        if line[:1] in (" ", "\t") and last:  # a folded continuation of the header above
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue  # not a header: ignored, as http.client's parser did
        last = name.strip().lower()
        value = value.strip()
        headers[last] = f"{headers[last]}, {value}" if last in headers else value
    return RouterResponse(sock, origin, url, read_timeout, status, version, headers, data)


def _read_timeout(url: str, timeout: float | None) -> ReadTimeoutError:
    return ReadTimeoutError(None, url, f"Read timed out. (read timeout={timeout})")  # type: ignore[arg-type]


_LENGTH, _CHUNKED, _TO_CLOSE, _DONE = range(4)


class RouterResponse:
    """A router's answer: `status`, `headers` (lower-case names, repeated ones joined with
    ", ") and the body, read as it arrives. The connection goes back to the router's pool once
    the body was read to its end and the router kept it open; an error, a close() or an
    answer not read to the end closes it."""

    __slots__ = (
        "_buffer",
        "_crlf_due",
        "_framed",
        "_keep",
        "_left",
        "_mode",
        "_origin",
        "_pos",
        "_preloaded",
        "_reading",
        "_sock",
        "_timeout",
        "_url",
        "headers",
        "status",
    )

    def __init__(
        self,
        sock: socket.socket,
        origin: _Origin,
        url: str,
        read_timeout: float | None,
        status: int,
        version: bytes,
        headers: dict[str, str],
        buffered: bytes,
    ) -> None:
        self.status = status
        self.headers = headers
        self._sock: socket.socket | None = sock
        self._origin = origin
        self._url = url
        self._timeout = read_timeout
        self._buffer = buffered  # what was read off the socket; unread from _pos on
        self._pos = 0
        self._reading = False  # a greenlet is blocked in this answer's socket read
        self._crlf_due = False
        self._preloaded: bytes | None = None
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if version == b"HTTP/1.0":
            self._keep = "keep-alive" in tokens
        else:
            self._keep = "close" not in tokens
        coding = headers.get("transfer-encoding")
        length = _content_length(headers.get("content-length"))
        self._left = 0
        if status in (204, 304):
            self._mode = _LENGTH
        elif coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._mode = _CHUNKED
            else:
                self._mode = _TO_CLOSE
        elif length is not None:
            self._mode, self._left = _LENGTH, length
        else:
            self._mode = _TO_CLOSE
        self._framed = self._mode != _TO_CLOSE
        if self._mode == _LENGTH and self._left == 0:
            self._finish()

    # -- reading -------------------------------------------------------------------------

    def read1(self, amt: int = _READ) -> bytes:
        """The body's next bytes as they arrive (at most `amt`, without waiting for more once
        some are there); b"" at its end."""
        if self._preloaded is not None:
            data, self._preloaded = self._preloaded, b""
            return data
        mode = self._mode
        if mode == _LENGTH:
            if self._pos == len(self._buffer):
                self._fill()
            data = self._take(min(amt, self._left))
            self._left -= len(data)
            if not self._left:
                self._finish()
            return data
        if mode == _CHUNKED:
            return self._read_chunked(amt)
        if mode == _TO_CLOSE:
            if self._pos == len(self._buffer) and not self._fill(eof_ends=True):
                self._finish()
                return b""
            return self._take(amt)
        return b""

    def stream(self, amt: int = _READ) -> Iterator[bytes]:
        while data := self.read1(amt):
            yield data

    @property
    def data(self) -> bytes:
        """The rest of the body (all of it when preloaded)."""
        return b"".join(self.stream())

    def preload(self) -> None:
        self._preloaded = b"".join(self.stream())

    def _read_chunked(self, amt: int, *, wait: bool = True) -> bytes:
        """What the buffer holds of the chunks (reading the socket only when it holds none of
        the body), so that each read returns as soon as some of the body is there. `_left`:
        the bytes left of the current chunk; 0 at a chunk-size line; -1 in the trailers."""
        pieces: list[bytes] = []
        size = 0
        while size < amt:
            if not self._left:
                if self._crlf_due:
                    line = self._line(wait=wait and not pieces)
                    if line is None:
                        break
                    if line:
                        raise self._broken("a chunk longer than its size")
                    self._crlf_due = False
                line = self._line(wait=wait and not pieces)
                if line is None:
                    break
                try:
                    self._left = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise self._broken(f"invalid chunk size {line!r}") from None
                if self._left < 0:
                    raise self._broken(f"invalid chunk size {line!r}")
                if not self._left:
                    self._left = -1
            if self._left < 0:
                line = self._line(wait=wait and not pieces)
                if line is None:
                    break
                if not line:  # the blank line after the trailers: the end
                    self._finish()
                    break
                continue
            if self._pos == len(self._buffer):
                if pieces or not wait:
                    break
                self._fill()
            piece = self._take(min(self._left, amt - size))
            self._left -= len(piece)
            self._crlf_due = not self._left
            pieces.append(piece)
            size += len(piece)
        return b"".join(pieces)

    def _line(self, *, wait: bool) -> bytes | None:
        """The buffer's next line without its line end; None if it is not all there and
        `wait` is false."""
        while True:
            end = self._buffer.find(b"\n", self._pos)
            if end >= 0:
                line = self._buffer[self._pos : end].rstrip(b"\r")
                self._pos = end + 1
                return line
            if len(self._buffer) - self._pos > MAX_LINE:
                raise self._broken("a chunk line too long")
            if not wait:
                return None
            self._fill()

    def _fill(self, *, eof_ends: bool = False) -> bool:
        """Read what the socket has into the buffer; False at the end of the connection when
        that ends the body (`eof_ends`), else the end is an error."""
        sock = self._sock
        if sock is None:
            raise self._broken("the answer was closed")
        self._reading = True
        try:
            data = sock.recv(_READ)
        except TimeoutError as exc:
            self._shut()
            raise _read_timeout(self._url, self._timeout) from exc
        except OSError as exc:
            raise self._broken(repr(exc)) from exc
        finally:
            self._reading = False
        if not data:
            if eof_ends:
                return False
            raise self._broken("the answer ended before its end")
        self._buffer = self._buffer[self._pos :] + data
        self._pos = 0
        return True

    def _take(self, most: int) -> bytes:
        """Up to `most` unread bytes of the buffer (moving on by an offset: a buffer of many
        small chunks is not copied once per chunk)."""
        start = self._pos
        self._pos = end = min(len(self._buffer), start + most)
        return self._buffer[start:end]

    def _finish(self) -> None:
        """The body was read to its end: the connection goes back to the pool if the router
        keeps it open, its answer was framed, and nothing was sent past it."""
        sock, self._sock = self._sock, None
        self._mode = _DONE
        if sock is None:
            return
        if self._keep and self._framed and self._pos == len(self._buffer):
            self._origin.put(sock)
        else:
            sock.close()

    def _broken(self, why: str) -> ProtocolError:
        """The answer cannot be read on: its connection is closed, never reused."""
        self._shut()
        return ProtocolError(f"Connection broken: {why}")

    # -- ending ----------------------------------------------------------------------------

    def close(self) -> None:
        """End the answer. Never raises, never waits.

        A stream is read up to its [DONE] event, not to the chunked body's end after it: if
        that end has come already, it is read here (without waiting: the socket is
        non-blocking for it) and the connection goes back to the pool. Otherwise, or when a
        reader in another greenlet is blocked on the socket, the connection is shut down both
        ways, which wakes that reader (at EOF) and tells the router, then closed."""
        sock = self._sock
        if sock is not None and self._mode == _CHUNKED and self._left <= 0 and not self._reading:
            sock.settimeout(0)
            try:
                self._read_chunked(_READ, wait=False)
                if self._pos == len(self._buffer) and self._sock is not None:
                    self._fill()
                    self._read_chunked(_READ, wait=False)
            except (ProtocolError, ReadTimeoutError):
                return  # closed
        self._shut()

    def _shut(self) -> None:
        sock, self._sock = self._sock, None
        self._mode = _DONE
        if sock is None:
            return
        with contextlib.suppress(OSError):  # the router closed it already
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _content_length(value: str | None) -> int | None:
    """Content-Length as a number; None when absent or not a number (then the body ends with
    the connection, as http.client read it). Repeated differing values are refused."""
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) > 1:
        raise ProtocolError(f"Connection broken: conflicting Content-Length {value!r}")
    (text,) = values
    if not text.isdigit():
        return None
    return int(text)
