"""An asyncio client for many concurrent SSE streams (stdlib only, so it costs little CPU and
needs nothing installed): raw HTTP/1.1 over asyncio streams, one connection per stream.

For each stream it records the time to the first token (first event with non-empty text,
from before the connection was opened), the gaps between content events, and whether it
ended properly (HTTP 200, no error event, `data: [DONE]` or Anthropic's `message_stop`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

_EVENT = re.compile(rb"data: ([^\n]*)\n\n")


@dataclass
class StreamResult:
    ok: bool = False
    status: int = 0
    error: str = ""
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0


def _content_of(event: bytes) -> tuple[str, bool]:
    """(the event's text, whether it is an error event) for OpenAI chat, legacy or router, or
    Anthropic's content_block_delta."""
    try:
        data = json.loads(event)
    except ValueError:
        return "", False
    if not isinstance(data, dict):
        return "", False
    if data.get("type") == "content_block_delta":
        return (data.get("delta") or {}).get("text") or "", False
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    text = choice.get("text")
    if text is None:
        text = (choice.get("delta") or {}).get("content")
    return text or "", "error" in data


async def one_stream(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    delay: float = 0.0,
    timeout: float = 120.0,
) -> StreamResult:
    if delay:
        await asyncio.sleep(delay)
    result = StreamResult()
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            head = [
                f"POST {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await reader.readline()
            result.status = int(status_line.split()[1]) if status_line else 0
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            buffer = b""
            last = None
            done = False
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                now = time.perf_counter()
                buffer += data
                end = 0
                for match in _EVENT.finditer(buffer):
                    end = match.end()
                    event = match.group(1)
                    if event == b"[DONE]" or event == b'{"type":"message_stop"}':
                        done = True  # OpenAI's end, or Anthropic's
                        continue
                    text, is_error = _content_of(event)
                    if is_error:
                        result.error = "error event"
                    if text:
                        result.tokens += 1
                        if result.ttft is None:
                            result.ttft = now - started
                        if last is not None:
                            result.gaps.append(now - last)
                        last = now
                buffer = buffer[end:]
            if result.status != 200:
                result.error = result.error or f"HTTP {result.status}"
            elif not done:
                result.error = result.error or "no [DONE]"
            result.ok = not result.error
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        result.error = exc.__class__.__name__
    finally:
        if writer is not None:
            writer.close()
    return result


async def many_streams(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    count: int,
    ramp_seconds: float,
) -> list[StreamResult]:
    """`count` streams, started evenly over `ramp_seconds` (a burst of 1,000 connect()s in
    the same millisecond measures the listen backlog, not the gateway)."""
    step = ramp_seconds / count if count else 0
    return await asyncio.gather(
        *(one_stream(host, port, path, headers, body, delay=i * step) for i in range(count))
    )
