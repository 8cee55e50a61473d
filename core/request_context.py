"""The current request id, per thread or greenlet (gevent patches threading.local)."""

from __future__ import annotations

import threading

_local = threading.local()


def set_request_id(value: str | None) -> None:
    _local.request_id = value


def current_request_id() -> str | None:
    return getattr(_local, "request_id", None)
