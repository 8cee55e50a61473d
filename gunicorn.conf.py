"""gunicorn for production: gevent workers, one greenlet per connection, so a worker holds
many open streams while it waits on routers.

    gunicorn -c gunicorn.conf.py portal.wsgi:application      (what `make serve` runs)

Environment: WEB_CONCURRENCY (workers, default 2), PORT (8000), HOST (0.0.0.0),
WORKER_CONNECTIONS (1000 per worker), GRACEFUL_TIMEOUT (60 s), WORKER_TIMEOUT (120 s),
MAX_REQUESTS, FORWARDED_ALLOW_IPS, ACCESS_LOG ("-" for stdout), PROMETHEUS_MULTIPROC_DIR.

gevent: the gevent worker monkey-patches at worker start, before the app is imported
(preload_app is off), so requests (routers), redis-py and psycopg (3.1.14+ detects the
patched `select`) all yield to other greenlets while they wait.
"""

import json
import logging
import os
import shutil
import tempfile
import time
import traceback

from dotenv import dotenv_values
from gunicorn import glogging

# The checkout's .env (what `make run` writes and portal/settings.py reads) counts here too, so
# `make serve` binds where the settings think it serves; the environment always wins, and
# ENV_FILE= turns it off (as in containers, which get variables, not the file).
_env_file = os.environ.get(
    "ENV_FILE", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env")
)
if _env_file and os.path.isfile(_env_file):
    for _name, _value in dotenv_values(_env_file).items():
        if _value is not None:
            os.environ.setdefault(_name, _value)

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gunicorn's gevent worker, answering the errors gunicorn produces itself (oversized headers,
# malformed request lines) in the API's JSON error shape: see gunicorn_worker.py.
worker_class = "gunicorn_worker.ApiErrorGeventWorker"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# Streams can be long: the worker timeout is about heartbeats, not requests, under gevent.
timeout = int(os.environ.get("WORKER_TIMEOUT", "120"))
# On SIGTERM a worker stops accepting and lets open streams finish for this long.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "60"))
keepalive = 5
# Header sizes are the API guard's to judge (core/api_guard.py: 16 KiB a header, 32 KiB in
# all, refused in the API's error shape): gunicorn's own cap (8190 by default) sits above it,
# so a 10 KB bad key gets the same 401 on gunicorn as anywhere else.
limit_request_field_size = 20 * 1024
backlog = int(os.environ.get("BACKLOG", "2048"))
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 100
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
errorlog = "-"
# Preload off: each worker opens its own Redis/PostgreSQL pools after the fork, and gevent
# patches before anything of the app is imported.
preload_app = False
proc_name = "cortensor-portal"
# gunicorn 25+'s control socket defaults to one path per user: several gunicorns on a host
# (scale-out, tests, the benchmark) would take it from each other. Opt in with a path.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]

# Prometheus multiprocess mode: the variable must be in the environment before any worker
# imports prometheus_client, so it is set here, in the master, and inherited by the workers.
# A directory of our own unless the operator names one (it is wiped at start either way:
# files of a previous run would be summed in).
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portal-metrics-")


def on_starting(server):
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def child_exit(server, worker):
    # A dead worker's live gauges (streams in flight) must stop counting.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


# --- logs -----------------------------------------------------------------------------------
# JSON lines in production (LOG_FORMAT=json, the default when DEBUG is off), like the app's own
# (core/logging.py). Defined here rather than imported: importing `portal` in the master
# would import Celery before the workers' gevent patching.
_DEBUG = os.environ.get("DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
_LOG_FORMAT = os.environ.get("LOG_FORMAT") or ("text" if _DEBUG else "json")
# One line per request (method, path without query, status, bytes, duration, request id);
# ACCESS_LOG=0 turns it off, ACCESS_LOG=<file> writes it there in the text format.
_ACCESS_LOG = os.environ.get("ACCESS_LOG", "-")


class JsonLogFormatter(logging.Formatter):
    """gunicorn's error and access logs as JSON. Access lines take only chosen atoms: the
    atoms also hold every request header, Authorization included, and the query string."""

    def format(self, record):
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            atoms = record.args
            entry.update(
                request_id=atoms.get("{x-request-id}o", "-"),
                msg="request",
                method=atoms.get("m"),
                path=atoms.get("U"),
                status=int(atoms.get("s") or 0),
                bytes=atoms.get("B"),
                duration_ms=round(atoms.get("D", 0) / 1000, 2),
                remote=atoms.get("h"),
                pid=os.getpid(),
            )
        else:
            entry.update(request_id="-", msg=record.getMessage())
            if record.exc_info:
                entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class JsonAccessLogger(glogging.Logger):
    """gunicorn's logger, whose access line carries only the atoms JsonLogFormatter writes.

    gunicorn's own `access()` builds a dict of every request header, response header and
    environ entry, copies it to escape quotes, and asks logging where it was called from, for
    a line that reads eight of them: about 5 % of a worker's time at 16 connections. Used
    only while every handler of the access log formats with JsonLogFormatter (the JSON
    default); any other handler (a text file, syslog) gets gunicorn's own atoms."""

    _json_only = False

    def setup(self, cfg):
        super().setup(cfg)
        handlers = self.access_log.handlers
        self._json_only = (
            bool(handlers)
            and not self.access_log.propagate
            and all(isinstance(h.formatter, JsonLogFormatter) for h in handlers)
        )

    def access(self, resp, req, environ, request_time):
        if not self._json_only:
            return super().access(resp, req, environ, request_time)
        log = self.access_log
        if not log.isEnabledFor(logging.INFO):
            return None
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = "-"
        for name, value in reversed(resp.headers):  # the last one, as in gunicorn's atoms
            if name.lower() == "x-request-id":
                request_id = value
                break
        # What gunicorn's atoms and SafeAtoms hold for these names, quotes escaped alike.
        atoms = {
            "{x-request-id}o": request_id,
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "s": status,
            "B": getattr(resp, "sent", None),
            "D": request_time.seconds * 1000000 + request_time.microseconds,
            "h": environ.get("REMOTE_ADDR", "-"),
        }
        for name, value in atoms.items():
            if isinstance(value, str) and '"' in value:
                atoms[name] = value.replace('"', '\\"')
        record = log.makeRecord(
            log.name, logging.INFO, "(unknown file)", 0, self.cfg.access_log_format, (atoms,), None
        )
        try:
            log.handle(record)
        except Exception:
            self.error(traceback.format_exc())
        return None


if _ACCESS_LOG.strip().lower() in {"0", "off", "false", "no", ""}:
    accesslog = None
elif _ACCESS_LOG != "-":
    accesslog = _ACCESS_LOG
elif _LOG_FORMAT == "json":
    accesslog = None  # the handler below writes it
else:
    accesslog = "-"

if _LOG_FORMAT == "json":
    _access_on = _ACCESS_LOG == "-"
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLogFormatter}},
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["error_console"],
                "propagate": False,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "level": "INFO" if _access_on else "WARNING",
                "handlers": ["console"],
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        },
        "root": {"level": "INFO", "handlers": []},
    }
    logger_class = JsonAccessLogger


class SlowClientFilter(logging.Filter):
    """A streamed write that timed out is a client that stopped reading, cut off on purpose
    (the app sets STREAM_WRITE_TIMEOUT_SECONDS on the socket): one INFO line, not an ERROR
    with a traceback for every slow reader."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TimeoutError) and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = (
                "client stopped reading: disconnected after the write timeout",
                (),
            )
            record.exc_info = record.exc_text = None
        return True


def post_fork(server, worker):
    # Python warnings (a missing static folder, a deprecation) become log records too, so a
    # JSON log stays JSON from the worker's first line.
    if _LOG_FORMAT == "json":
        logging.captureWarnings(True)
    worker.log.error_log.addFilter(SlowClientFilter())


def worker_exit(server, worker):
    # Usage records still queued in the batch writer go to the database before the worker
    # goes (after a graceful shutdown let its open streams finish).
    import sys

    recording = sys.modules.get("metering.recording")
    if recording is not None and recording._writer is not None:
        recording._writer.flush()
