"""The container healthcheck: `python -m portal.healthcheck` exits 0 when /healthz answers 200.

It asks with a Host the portal serves (the first of ALLOWED_HOSTS), so it keeps working when
ALLOWED_HOSTS is the real domain (a request for Host 127.0.0.1 would be refused as a
DisallowedHost), and over plain HTTP on the container's own port (/healthz is exempt from the
HTTPS redirect). Standard library only: it runs every few seconds and must start fast.
"""

from __future__ import annotations

import http.client
import os
import sys


def served_host(allowed_hosts: str) -> str:
    """A Host header that ALLOWED_HOSTS accepts: its first entry, a wildcard made concrete."""
    for entry in (h.strip() for h in allowed_hosts.split(",")):
        if not entry:
            continue
        if entry == "*":
            return "localhost"
        return "healthcheck" + entry if entry.startswith(".") else entry
    return "localhost"  # settings' default list starts with it


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    host = served_host(os.environ.get("ALLOWED_HOSTS", ""))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request("GET", "/healthz", headers={"Host": host})
        status = connection.getresponse().status
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"healthcheck: /healthz answered {status} for Host {host}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
