"""The router simulator for benchmarks: `python -m inference.simulator` with TCP_NODELAY on
its connections.

Without it, every request after the first on a keep-alive connection waits ~40 ms (Nagle's
algorithm on the simulator's small writes meeting the client's delayed ACK), which would cap
the direct baseline at 1/0.04 requests per second per connection and hide the portal's own
cost. Real routers sit behind nginx, which sets TCP_NODELAY.

    python bench/sim.py --port 5010 [simulator options]
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import simulator


class NoDelayHandler(simulator.SimHandler):
    def __init__(self, sock, address, server, rfile=None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)


if __name__ == "__main__":
    simulator.SimHandler = NoDelayHandler
    simulator.main()
