"""gunicorn for production: gevent workers, one greenlet per connection, so a worker holds
many open streams while it waits on routers."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# Streams can be long: the worker timeout is about heartbeats, not requests, under gevent.
timeout = int(os.environ.get("WORKER_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "60"))
keepalive = 5
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 100
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# Preload off: each worker opens its own Redis/PostgreSQL pools after the fork.
preload_app = False
