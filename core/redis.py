"""The shared Redis client (limits, journal, spool, key cache invalidation), or None on the
embedded default; and the one factory every Redis client of the portal is made by.

`REDIS_CLUSTER=1` makes every client a `redis.cluster.RedisCluster` with `REDIS_URL` as its
startup node (docs/redis-cluster.md). Code that works on both keeps to what a cluster allows:
a script's or a transaction's keys share one hash tag (metering/limits/keys.py), multi-key
commands go through the cluster client's splitting variants, and SCAN runs on every primary
(`scan_all`).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Iterator

import redis
from django.conf import settings
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.connection import Encoder
from redis.exceptions import RedisClusterException
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import HIREDIS_AVAILABLE

from core.sockets import readable_now


def get_redis():
    """The client for settings.REDIS_URL (one per URL and process), or None without Redis."""
    return _client_for(settings.REDIS_URL, cluster_mode()) if settings.REDIS_URL else None


def cluster_mode() -> bool:
    return bool(getattr(settings, "REDIS_CLUSTER", False))


def redis_from_url(url: str, *, cluster: bool | None = None, max_connections: int = 256, **kwargs):
    """A new client for `url`: a cluster client (url = a startup node) when `cluster` (default:
    settings.REDIS_CLUSTER), else a plain one. Both block for a free connection rather than
    fail, and never retry a command: a limits script that timed out after Redis ran it must not
    run twice (it would admit the request twice), and an outage should fail fast into a 503."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if cluster is None:
        cluster = cluster_mode()
    options = {
        "max_connections": max_connections,
        "timeout": 2,  # the blocking pool's wait for a free connection
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        # Off: the notices are RESP3 pushes, which these RESP2 connections never receive, and
        # while they are on (redis-py 8's "auto") the pool ignores its own check and hands out
        # a connection holding an unread reply; it also keeps their bookkeeping per command.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        **kwargs,
    }
    no_retry = Retry(NoBackoff(), 0)
    # (a cluster client drops the parser option: its nodes keep redis-py's own check)
    options = {**ready_check_options(), **options}
    if cluster:
        # Per node, a blocking pool; MOVED and ASK redirections are followed all the same.
        return LazyRedisCluster(
            lambda: _PortalRedisCluster.from_url(
                url, connection_pool_class=redis.BlockingConnectionPool, retry=no_retry, **options
            )
        )
    pool = redis.BlockingConnectionPool.from_url(
        url, health_check_interval=30, retry=no_retry, **options
    )
    return redis.Redis(connection_pool=pool, retry=no_retry)


@functools.cache
def _client_for(url: str, cluster: bool):
    return redis_from_url(url, cluster=cluster)


get_redis.cache_clear = _client_for.cache_clear  # type: ignore[attr-defined]  # forget clients (tests that move REDIS_URL)


if HIREDIS_AVAILABLE:
    from redis._parsers import _HiredisParser

    class _ReadyCheckParser(_HiredisParser):
        """redis-py's parser, with the pool's check before each command (unread data on this
        connection, or did the server close it?) asked of the operating system's poll
        (core/sockets.py). Only the quiet case, nothing to read, is answered here; a readable
        socket (data, or a closed connection) goes to redis-py's own check, as before."""

        def can_read(self, timeout: float = 0) -> bool:
            sock = self._sock
            if (
                timeout == 0
                and sock is not None
                and self._reader
                and not self._reader.has_data()
                and not hasattr(sock, "pending")  # TLS: bytes may wait above the socket
                and not readable_now(sock)
            ):
                return False
            return super().can_read(timeout)


class DirectLane:
    """A few connections of one Redis for the request path's own commands (the admission
    script, the slot release), used without redis-py's client and pool around them.

    Through the client a command cost ~100 µs of a worker's CPU under gevent, ~75 µs of them
    the pool's checkout and checkin (its lock, pid checks and connection-count bookkeeping),
    the retry wrapper and the option parsing; sent and read on the connection itself, ~25 µs.
    What the pool does that matters is done here too: a connection with something to read
    (unread data, or the server closed it) is reconnected before it carries a command, and a
    command that fails or is interrupted leaves its connection disconnected (redis-py's
    connection does that), never holding a reply the next command would read. Commands are
    never retried, as on the client.

    A greenlet takes an idle connection (or makes one) for its command and puts it back once
    the reply is read. Past MAX_OPEN at once, a command goes through the client instead, whose
    pool blocks for a free connection. Not for a Redis Cluster (its client routes by slot)."""

    MAX_OPEN = 64

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pool = client.connection_pool
        self._idle: list = []
        self._open = 0
        _lanes.add(self)

    def execute(self, *args):
        """Send one command, each of its words an argument ("CLIENT", "ID"), and read its reply
        (raw: no response callback); raises what the client would (ConnectionError,
        TimeoutError, ResponseError and its kinds)."""
        connection = self._take()
        if connection is None:
            return self._client.execute_command(*args)
        try:
            if connection.is_connected and _stale(connection):
                connection.disconnect()  # the next send connects afresh
            connection.send_packed_command(_pack(connection, args), check_health=False)
            reply = connection.read_response()
        except redis.ResponseError:
            self._idle.append(connection)  # an error reply was read whole
            raise
        except BaseException:
            connection.disconnect()
            self._idle.append(connection)
            raise
        self._idle.append(connection)
        return reply

    def execute_many(self, commands: list[tuple]) -> list:
        """Send commands in one write and read their replies, in order (raw), an error reply as
        its exception in its place, like the client's pipeline; raises ConnectionError or
        TimeoutError as it would (some of the commands may have run). Without the pipeline's
        per-argument packing and its chunked sends: one buffer packed by hiredis."""
        connection = self._take()
        if connection is None:
            pipe = self._client.pipeline(transaction=False)
            for args in commands:
                pipe.execute_command(*args)
            return pipe.execute(raise_on_error=False)
        replies: list = []
        try:
            if connection.is_connected and _stale(connection):
                connection.disconnect()
            packed = [part for args in commands for part in _pack(connection, args)]
            connection.send_packed_command([b"".join(packed)], check_health=False)
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:  # read whole: the next reply follows
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            self._idle.append(connection)
            raise
        self._idle.append(connection)
        return replies

    def _take(self):
        """An idle connection, a new one, or None past MAX_OPEN (then the client's pool)."""
        try:
            return self._idle.pop()
        except IndexError:
            if self._open >= self.MAX_OPEN:
                return None
            self._open += 1
            return self._pool.connection_class(**self._pool.connection_kwargs)

    def forget(self) -> None:
        """Drop the connections without closing them (a forked child: they are the parent's)."""
        self._idle = []
        self._open = 0


if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack

    def _pack(connection, args: tuple) -> list[bytes]:
        # The lane's commands are str, bytes and int arguments, which hiredis packs as
        # redis-py's packer would, without its per-argument checks (~15 % of a command's CPU).
        return [_hiredis_pack(args)]
else:

    def _pack(connection, args: tuple) -> list[bytes]:
        return connection.pack_command(*args)


def _stale(connection) -> bool:
    """Something to read on a connection between commands: unread data, or the server closed
    it (which redis-py's check raises as an error)."""
    try:
        return connection.can_read()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return True


_lanes: weakref.WeakSet[DirectLane] = weakref.WeakSet()


def _forget_lanes() -> None:
    for lane in _lanes:
        lane.forget()


os.register_at_fork(after_in_child=_forget_lanes)


def direct_lane(client) -> DirectLane | None:
    """A lane beside `client`, or None for a cluster client (or none)."""
    if client is None or is_cluster(client):
        return None
    return DirectLane(client)


def ready_check_options() -> dict:
    """The options that give a plain client's connections the parser below, for any client
    not made by `redis_from_url` (a subscription's)."""
    return {"parser_class": _ReadyCheckParser} if HIREDIS_AVAILABLE else {}


def is_cluster(client) -> bool:
    return isinstance(client, LazyRedisCluster | RedisCluster)


def _unreachable(exc: Exception) -> redis.ConnectionError:
    return redis.ConnectionError(f"Redis Cluster unreachable: {exc}")


class _PortalPipeline(ClusterPipeline):
    def execute(self, raise_on_error: bool = True):
        try:
            return super().execute(raise_on_error)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc


class _PortalRedisCluster(RedisCluster):
    """redis-py's cluster client raises RedisClusterException, not a RedisError, when no node
    answers (and its callers catch RedisError, as for one Redis): here it is a ConnectionError,
    which the limits turn into a 503 like a single Redis that is down."""

    def execute_command(self, *args, **kwargs):
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc

    def pipeline(self, transaction=None, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = _PortalPipeline
        return pipe


class LazyRedisCluster:
    """A cluster client made at its first command. redis-py's connects in its constructor, so
    a cluster down when a process starts would make `get_redis()` itself raise (a 500 where a
    single Redis gives the limits' 503): this one raises ConnectionError from the command, and
    the next command tries again."""

    def __init__(self, factory):
        self._factory = factory
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()
        self._encoder = Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=False)

    def connected(self) -> RedisCluster:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._factory()
                    except RedisClusterException as exc:
                        raise _unreachable(exc) from exc
                client = self._client
        return client

    def __getattr__(self, name: str):
        return getattr(self.connected(), name)

    def get_encoder(self) -> Encoder:
        return self._encoder  # a script's SHA needs it before any connection

    def register_script(self, script: str) -> Script:
        # evalsha through this object: it connects when the script first runs
        return Script(self, script)  # type: ignore[arg-type]  # quacks like a RedisCluster

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def scan_all(client, *, match: str, count: int = 1000, type_: str | None = None) -> Iterator:
    """SCAN the whole keyspace: on a cluster every primary (a key lives on one of them), on a
    single Redis its database."""
    if is_cluster(client):
        yield from client.scan_iter(
            match=match, count=count, _type=type_, target_nodes=client.PRIMARIES
        )
    else:
        yield from client.scan_iter(match=match, count=count, _type=type_)


def node_client(client, key: str):
    """A plain client for the node that holds `key` (the client itself off a cluster): for a
    pipeline of `key`'s commands with keyless ones (TIME) on the same server."""
    if not is_cluster(client):
        return client
    return client.get_redis_connection(client.get_node_from_key(key))


def run_scripts(client, calls: list[tuple], *, lane: DirectLane | None = None) -> list:
    """Run many script calls, `(script, keys, args)`, in one round trip per node (down `lane`
    when there is one); their results in order, an exception object in place of a failed
    call's.

    Each call is an EVALSHA in a plain pipeline, not the script itself: a pipeline holding
    scripts first asks the server whether it has them (SCRIPT EXISTS, a round trip of its own
    every time). A call the server answers NOSCRIPT (it restarted, or its scripts were flushed:
    the script did not run) goes once more through the client, which loads it. On a cluster
    the calls are grouped by the primary that holds their slot and sent down that node's own
    pipeline (redis-py refuses scripts in a cluster pipeline); a call whose slot moved
    meanwhile (MOVED, ASK: it did not run either) also goes once more through the cluster
    client, which follows the redirection."""
    import redis

    results: list = [None] * len(calls)
    groups: dict[str, tuple] = {}  # node -> (its plain client, the indexes of its calls)
    if not is_cluster(client):
        groups[""] = (client, list(range(len(calls))))
    else:
        try:
            for i, (_script, keys, _args) in enumerate(calls):
                node = client.get_node_from_key(keys[0])
                if node.name not in groups:
                    groups[node.name] = (client.get_redis_connection(node), [])
                groups[node.name][1].append(i)
        except RedisClusterException as exc:  # no slot map: no node answered
            raise _unreachable(exc) from exc
    for server, indexes in groups.values():
        evalshas = []
        for i in indexes:
            script, keys, args = calls[i]
            evalshas.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        try:
            if lane is not None:  # (given for a single Redis only: `direct_lane`)
                out = lane.execute_many(evalshas)
            else:
                pipe = server.pipeline(transaction=False)
                for args in evalshas:
                    pipe.execute_command(*args)
                out = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            if not is_cluster(client):
                raise
            out = [exc] * len(indexes)  # the node is unreachable: none of them ran
        for i, result in zip(indexes, out, strict=True):
            results[i] = result
    for i, result in enumerate(results):
        if isinstance(result, _DID_NOT_RUN):
            script, keys, args = calls[i]
            try:
                results[i] = script(keys=keys, args=args)
            except redis.RedisError as exc:
                results[i] = exc
    return results


# Script replies that say the script did not run, so running it again cannot count twice.
_DID_NOT_RUN = (
    redis.exceptions.NoScriptError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
)


def redis_ping() -> str:
    client = get_redis()
    if client is None:
        return "disabled"
    try:
        client.ping()
        return "ok"
    except Exception:
        return "error"
