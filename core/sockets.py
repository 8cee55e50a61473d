"""Whether a socket has something to read right now, asked of the operating system.

Pooled clients (redis-py, the router client in inference/router_http.py) ask it of every
connection before they reuse it: unread data or a closed peer means the connection must not
carry the next command or request. Under gevent `select.poll` is gevent's, which even for a
zero timeout starts watchers on the hub's loop and switches greenlets; a non-blocking poll(2)
answers the same question without waiting and without the hub (the checks were 2-4 % of a
worker's samples each at 16 connections).
"""

from __future__ import annotations

import select

try:
    from gevent.monkey import get_original

    _os_poll = get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a dependency
    _os_poll = select.poll


def readable_now(sock) -> bool:
    """True when `sock` has data to read, or its peer closed or it failed (POLLHUP, POLLERR
    and POLLNVAL are reported whatever the mask), without waiting."""
    poller = _os_poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
