"""The daemon's Prometheus metrics: one registry per daemon (never prometheus-client's global
one, so that tests and several daemons in one process do not collide).

Three sources feed it:

- **the bus**, as events happen: messages received and sent, inbound processing time (from a
  client's message being stored to its `message.received`), browser health-check
  failures (a session going back to `CONNECTING` because the health check failed), sends
  refused at the door by a limit (`SendsRefused`, published by `wad.org.outbound.queue`), plugin
  errors (`PluginFailed`, published by the daemon), inbound processing retried or parked
  (`ProcessingFailed`, published by the inbound actor);
- **the bus and the database together**: the time to first answer (`wad.db.repo.answers`),
  looked up for every outgoing message (`message.sent`) off the event loop's counting path;
- **the supervisors** (`wad.supervise.on_restart`): actor restarts by organization and actor;
- **the database and /proc at scrape time** (`refresh`): sessions by state, send queue depth and
  the age of its oldest message, send latencies (queued to sent, sent to delivered, read from the
  queue's status history since the last scrape), webhook deliveries pending, the connection pool,
  and the memory (PSS) of the daemon, its browsers and its embedded PostgreSQL.

Labels stay bounded: organizations (their ids), states, actors, plugins, limits; never phone
numbers or message ids.
"""

from __future__ import annotations

import collections
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import wad
from wad import log, payloads, supervise
from wad.browser import profile as archive
from wad.bus import (
    Event,
    EventBus,
    MessageReceived,
    MessageSent,
    MessageStored,
    PluginFailed,
    ProcessingFailed,
    SendsRefused,
    SessionIncompatible,
    SessionStatus,
)
from wad.db.pool import Database
from wad.db.repo import answers as answers_repo
from wad.db.repo import deliveries as deliveries_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import overview as overview_repo

_log = log.get("metrics")

SESSION_STATES = ("DISCONNECTED", "CONNECTING", "QR_CODE_PENDING", "PAIRING_CODE_PENDING",
                  "CONNECTED", "ERROR", "LOGGED_OUT", "BANNED")

BUS_KINDS: frozenset[type[Event]] = frozenset({
    MessageStored, MessageReceived, MessageSent, SessionStatus, SessionIncompatible, SendsRefused,
    PluginFailed, ProcessingFailed})
"""The bus events the counters follow."""

SEND_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600)
ANSWER_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 8 * 3600, 24 * 3600,
                  3 * 24 * 3600)
ANSWER_BACKLOG = 1_000
"""Outgoing messages waiting for their answer time to be looked up (more are not counted)."""
PROCESSING_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

PENDING_STORED_MAX = 10_000
"""Stored messages remembered while waiting for their processing to finish (the oldest are
forgotten first: a message that is never processed must not hold memory)."""

LATENCY_BATCH = 10_000
"""Queue status changes read per scrape at most (the rest wait for the next scrape)."""


def _org_label(org_id: uuid.UUID | None) -> str:
    return str(org_id) if org_id is not None else ""


# -- /proc ------------------------------------------------------------------------------------


_N = TypeVar("_N", int, float)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = ppid
    return found


def _tree(root: int, parents: dict[int, int]) -> list[int]:
    """`root` and its descendants."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _pss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _kind(pid: int, daemon: int) -> str:
    if pid == daemon:
        return "daemon"
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "other"
    if "chrom" in comm or comm == "headless_shell":
        return "browser"
    if comm == "node" or comm.startswith("node-"):
        return "driver"  # Playwright's driver process (Node names its main thread `node-MainThread`)
    if comm.startswith("postgres"):
        return "database"
    return "other"


def memory_by_kind(daemon_pid: int, postmaster_pid: int | None = None
                   ) -> dict[str, tuple[int, int]]:
    """PSS in bytes and process count by kind (`daemon`, `browser`, `driver`, `database`,
    `other`) of the daemon, its descendants and, when given, the embedded PostgreSQL server
    (which runs detached from the daemon)."""
    return _by_kind(daemon_pid, postmaster_pid, _pss_bytes)


def cpu_by_kind(daemon_pid: int, postmaster_pid: int | None = None
                ) -> dict[str, tuple[float, int]]:
    """CPU time used so far (user + system, seconds) and process count by kind, over the same
    processes as `memory_by_kind` (processes that already ended are not counted)."""
    return _by_kind(daemon_pid, postmaster_pid, _cpu_seconds)


def _by_kind(daemon_pid: int, postmaster_pid: int | None,
             measure: Callable[[int], _N | None]) -> dict[str, tuple[_N, int]]:
    parents = _parents()
    pids = _tree(daemon_pid, parents)
    if postmaster_pid is not None and postmaster_pid in parents and postmaster_pid not in pids:
        pids += _tree(postmaster_pid, parents)
    totals: dict[str, tuple[_N, int]] = {}
    for pid in pids:
        value = measure(pid)
        if value is None:
            continue
        kind = "database" if postmaster_pid is not None and pid != daemon_pid and (
            pid == postmaster_pid or parents.get(pid) == postmaster_pid) else _kind(pid, daemon_pid)
        if kind in totals:
            total, count = totals[kind]
            totals[kind] = (total + value, count + 1)
        else:
            totals[kind] = (value, 1)
    return totals


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def _postmaster_pid(state_dir: Path | None) -> int | None:
    if state_dir is None:
        return None
    try:
        return int((state_dir / "pg" / "postmaster.pid").read_text().split("\n")[0])
    except (OSError, ValueError):
        return None


# -- the scrape-time snapshot -------------------------------------------------------------------


@dataclass
class Snapshot:
    """What the last `refresh` read from the database and /proc."""

    organizations: dict[str, str] = field(default_factory=dict)  # id -> name
    states: dict[str, str] = field(default_factory=dict)  # id -> session state
    paused: dict[str, bool] = field(default_factory=dict)  # id -> sending paused
    queue: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (depth, age s)
    in_flight: dict[str, int] = field(default_factory=dict)
    deliveries_pending: dict[str, int] = field(default_factory=dict)  # plugin -> count
    pool: tuple[int, int, int] = (0, 0, 0)  # size, idle, max
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)
    database_up: bool = False
    refreshed_at: float = 0.0


class _SnapshotCollector(Collector):
    """Turns the snapshot into gauges at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        snap = self.metrics.snapshot
        yield from self._sessions(snap)
        yield from self._queue(snap)

        deliveries = GaugeMetricFamily(
            "wad_plugin_deliveries_pending", "Durable plugin deliveries (webhooks) waiting to "
            "be delivered", labels=["plugin"])
        for plugin, count in sorted(snap.deliveries_pending.items()):
            deliveries.add_metric([plugin], count)
        yield deliveries

        size, idle, maximum = snap.pool
        pool = GaugeMetricFamily("wad_db_pool_connections", "Database pool connections by use",
                                 labels=["state"])
        pool.add_metric(["in_use"], size - idle)
        pool.add_metric(["idle"], idle)
        yield pool
        yield GaugeMetricFamily("wad_db_pool_max_connections", "The pool's size limit",
                                value=maximum)
        yield GaugeMetricFamily("wad_db_up", "1 when the database answered the last scrape",
                                value=1 if snap.database_up else 0)

        memory = GaugeMetricFamily(
            "wad_memory_pss_bytes", "Proportional set size of the daemon's processes by kind "
            "(daemon, browser, driver, database, other)", labels=["kind"])
        processes = GaugeMetricFamily("wad_processes", "The daemon's processes by kind",
                                      labels=["kind"])
        for kind, (pss, count) in sorted(snap.memory.items()):
            memory.add_metric([kind], pss)
            processes.add_metric([kind], count)
        yield memory
        yield processes

        lane = self.metrics.lane_counts() if self.metrics.lane_counts is not None else None
        if lane is not None:
            yield CounterMetricFamily("wad_api_fast_lane_answered", "Control API requests "
                                      "answered by the fast lane (status and send)",
                                      value=lane[0])
            yield CounterMetricFamily("wad_api_fast_lane_handoffs", "Connections the fast lane "
                                      "handed to Hypercorn, at their first other request",
                                      value=lane[1])

        info = GaugeMetricFamily("wad_build_info", "The daemon's version and node",
                                 labels=["version", "node"])
        info.add_metric([wad.__version__, self.metrics.node], 1)
        yield info

    def _sessions(self, snap: Snapshot) -> Iterator[Metric]:
        orgs = GaugeMetricFamily("wad_organization_info", "Organizations by id, with their name",
                                 labels=["organization", "name"])
        for org, name in sorted(snap.organizations.items()):
            orgs.add_metric([org, name], 1)
        yield orgs
        state = GaugeMetricFamily(
            "wad_session_state", "1 for the WhatsApp session's current state, 0 for the others",
            labels=["organization", "state"])
        for org in sorted(snap.organizations):
            current = snap.states.get(org, "DISCONNECTED")
            for name in SESSION_STATES:
                state.add_metric([org, name], 1 if name == current else 0)
        yield state
        by_state = GaugeMetricFamily("wad_sessions", "Organizations by session state",
                                     labels=["state"])
        counts = collections.Counter(snap.states.get(org, "DISCONNECTED")
                                     for org in snap.organizations)
        for name in SESSION_STATES:
            by_state.add_metric([name], counts[name])
        yield by_state

    def _queue(self, snap: Snapshot) -> Iterator[Metric]:
        depth = GaugeMetricFamily("wad_send_queue_depth", "Messages queued to be sent",
                                  labels=["organization"])
        age = GaugeMetricFamily("wad_send_queue_oldest_age_seconds",
                                "Age of the oldest queued message (0 when none)",
                                labels=["organization"])
        flight = GaugeMetricFamily("wad_send_in_flight", "Messages being sent right now",
                                   labels=["organization"])
        paused = GaugeMetricFamily("wad_sending_paused", "1 while the circuit breaker (or an "
                                   "administrator) holds the organization's sending",
                                   labels=["organization"])
        for org in sorted(snap.organizations):
            count, oldest = snap.queue.get(org, (0, 0.0))
            depth.add_metric([org], count)
            age.add_metric([org], oldest)
            flight.add_metric([org], snap.in_flight.get(org, 0))
            paused.add_metric([org], 1 if snap.paused.get(org) else 0)
        yield depth
        yield age
        yield flight
        yield paused


# -- the metrics --------------------------------------------------------------------------------


class Metrics:
    """One daemon's metrics. Make it with the daemon's parts (it subscribes to the bus at once),
    run `run` in a nursery, and answer scrapes with `render`."""

    def __init__(self, *, db: Database, bus: EventBus | None = None, manager: Any = None,
                 node: str = "", pool_max: int = 0, state_dir: Path | None = None,
                 daemon_pid: int | None = None,
                 lane_counts: Callable[[], tuple[int, int] | None] | None = None) -> None:
        self.db = db
        self.lane_counts = lane_counts
        """The API's fast lane: (requests answered, connections handed to Hypercorn), None
        while no lane serves; read at every scrape."""
        self.manager = manager
        self.node = node
        self.pool_max = pool_max
        self.state_dir = state_dir
        self.daemon_pid = daemon_pid or os.getpid()
        self.snapshot = Snapshot()
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("wad_messages_received", "Messages received from clients",
                                ["organization"], registry=r)
        self.sent = Counter("wad_messages_sent", "Messages sent (by wad's queue or typed on the "
                            "linked phone)", ["organization"], registry=r)
        self.refused = Counter("wad_sends_refused", "Sends refused at the door by a limit",
                               ["organization", "limit"], registry=r)
        self.send_latency = Histogram(
            "wad_send_latency_seconds", "Send latency by stage: queued_to_sent (from being "
            "queued), sent_to_delivered", ["organization", "stage"], buckets=SEND_BUCKETS,
            registry=r)
        self.processing = Histogram(
            "wad_inbound_processing_seconds", "From a client's message being stored to the end "
            "of its processing (client, conversation, status, agent, notifications)",
            ["organization"], buckets=PROCESSING_BUCKETS, registry=r)
        self.first_answer = Histogram(
            "wad_first_answer_seconds", "Time to first answer: from a client's message that "
            "waits for an answer (the first since the last outgoing message) to the next "
            "outgoing message of its conversation, by a person or an agent (WhatsApp's times)",
            ["organization"], buckets=ANSWER_BUCKETS, registry=r)
        self.restarts = Counter("wad_actor_restarts", "Actor restarts by their supervisors "
                                "(organization empty for the daemon's own children)",
                                ["organization", "actor"], registry=r)
        self.health_failures = Counter(
            "wad_browser_health_check_failures", "Browser health checks that failed (the "
            "browser is then restarted)", ["organization"], registry=r)
        self.incompatible = Counter(
            "wad_page_incompatible", "Sessions stopped because the WhatsApp Web page lacked a "
            "module or member the bridge relies on", ["organization", "version"], registry=r)
        self.processing_retries = Counter(
            "wad_inbound_processing_retries", "Processing attempts of incoming messages that "
            "failed and will be tried again", ["organization"], registry=r)
        self.parked = Counter(
            "wad_inbound_messages_parked", "Incoming messages parked after their processing "
            "failed repeatedly (processing_state FAILED)", ["organization"], registry=r)
        self.plugin_errors = Counter("wad_plugin_errors", "Plugin hook calls that raised or "
                                     "took too long", ["plugin", "hook"], registry=r)
        self.archives_pruned = Counter(
            "wad_session_archives_pruned", "Login archives deleted by the retention policy",
            ["organization"], registry=r)
        ProcessCollector(registry=r)  # process_* of the daemon's own Python process
        r.register(_SnapshotCollector(self))
        self._stored: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._outbox_cursor: int | None = None
        self._refresh_lock = trio.Lock()
        self._answers_in, self._answers = trio.open_memory_channel[payloads.Message](
            ANSWER_BACKLOG)
        self._stack = ExitStack()
        self._events: trio.MemoryReceiveChannel[Event] | None = None
        if bus is not None:
            self._events = self._stack.enter_context(
                bus.subscribe(kinds=set(BUS_KINDS), buffer=10_000))

    # -- events --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Metrics] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Count bus events and actor restarts until cancelled (or `close`)."""
        supervise.on_restart.append(self.on_restart)
        archive.on_pruned.append(self.on_archives_pruned)
        try:
            await self._start_cursor()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._answer_times)
                task_status.started(self)
                if self._events is None:
                    await trio.sleep_forever()
                else:
                    async for event in self._events:
                        try:
                            self.observe(event)
                        except Exception:  # a malformed payload must not stop the counting
                            _log.exception("event not counted", kind=event.kind)
                nursery.cancel_scope.cancel()
        finally:
            if self.on_restart in supervise.on_restart:
                supervise.on_restart.remove(self.on_restart)
            if self.on_archives_pruned in archive.on_pruned:
                archive.on_pruned.remove(self.on_archives_pruned)
            self.close()

    def close(self) -> None:
        """Let go of the bus subscription (and thereby end `run`)."""
        self._stack.close()

    async def _start_cursor(self) -> None:
        # Latencies are counted from the queue's history written from now on.
        try:
            self._outbox_cursor = await outbox_repo.latest_event_id(self.db)
        except Exception as exc:
            _log.warning("database not answering; send latencies start at the first scrape",
                         error=str(exc))

    def observe(self, event: Event) -> None:
        """Count one bus event."""
        org = _org_label(event.org_id)
        match event:
            case MessageStored():
                self._remember_stored(event.id, event.at)
            case MessageReceived():
                self.received.labels(org).inc()
                self._processed(org, str(event.message.id), event.at)
            case MessageSent():
                # Typed on the phone (the inbound actor) or sent from the queue (the outbound
                # actor): not the processing of a client's message.
                self.sent.labels(org).inc()
                self._look_up_answer(event.message)
            case SessionStatus():
                error = event.last_error or ""
                if event.state == "CONNECTING" and error.startswith("health check"):
                    self.health_failures.labels(org).inc()
            case SessionIncompatible():
                self.incompatible.labels(org, event.version or "unknown").inc()
            case SendsRefused():
                self.refused.labels(org, event.limit).inc(event.count)
            case PluginFailed():
                self.plugin_error(event.plugin, event.hook)
            case ProcessingFailed():
                (self.parked if event.parked else self.processing_retries).labels(org).inc()

    def _look_up_answer(self, message: payloads.Message) -> None:
        """Have `_answer_times` look up whether this outgoing message answers a client."""
        if message.direction != "OUT":
            return
        try:
            self._answers_in.send_nowait(message)
        except trio.WouldBlock:
            _log.warning("time to first answer not counted: too many answers waiting",
                         org=str(message.organization_id))

    async def _answer_times(self) -> None:
        """Observe the time to first answer of each outgoing message that answers a client
        (one database lookup each, so the counting of other events never waits on it)."""
        async for message in self._answers:
            try:
                seconds = await answers_repo.answered_by(
                    self.db, message_id=message.id, conversation_id=message.conversation_id,
                    client_id=message.client_id)
            except Exception as exc:
                _log.warning("time to first answer not counted", error=str(exc))
                continue
            if seconds is not None:
                self.first_answer.labels(_org_label(message.organization_id)).observe(seconds)

    def _remember_stored(self, message_id: str, at: float) -> None:
        self._stored[message_id] = at
        while len(self._stored) > PENDING_STORED_MAX:
            self._stored.popitem(last=False)

    def _processed(self, org: str, message_id: str, at: float) -> None:
        stored_at = self._stored.pop(message_id, None)
        if stored_at is not None:
            self.processing.labels(org).observe(max(0.0, at - stored_at))

    def on_restart(self, supervisor: str, child: str, reason: str) -> None:
        """`wad.supervise.on_restart` hook: one actor restart. The hook list is shared by the
        whole process: with an organization manager, an organization's restarts count only
        where that manager runs it."""
        org = supervisor[4:] if supervisor.startswith("org-") else ""
        if org and self.manager is not None:
            try:
                if self.manager.running(uuid.UUID(org)) is None:
                    return
            except ValueError:
                pass
        self.restarts.labels(org, child).inc()

    def on_archives_pruned(self, org_id: uuid.UUID, deleted: int) -> None:
        """`wad.browser.profile.on_pruned` hook: login archives deleted by the retention policy."""
        self.archives_pruned.labels(_org_label(org_id)).inc(deleted)

    def plugin_error(self, plugin: str, hook: str) -> None:
        """One failed plugin call (for a caller that knows of one)."""
        self.plugin_errors.labels(plugin, hook).inc()

    # -- scrapes -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read what the gauges and latencies need from the database and /proc."""
        async with self._refresh_lock:
            snap = Snapshot(refreshed_at=time.time())
            try:
                await self._read_database(snap)
                snap.database_up = True
            except Exception as exc:
                _log.warning("metrics: database not answering", error=str(exc))
                snap.organizations = self.snapshot.organizations
            size, idle = self.db.pool_stats()
            snap.pool = (size, idle, self.pool_max)
            snap.memory = await trio.to_thread.run_sync(
                memory_by_kind, self.daemon_pid, _postmaster_pid(self.state_dir))
            self.snapshot = snap

    async def _read_database(self, snap: Snapshot) -> None:
        db = self.db
        for line in await overview_repo.states(db):
            org = str(line.id)
            snap.organizations[org] = line.name
            snap.states[org] = line.state
            snap.paused[org] = line.paused
            # Counters start at 0 for every organization, so that rates work from the first
            # message on.
            self.received.labels(org)
            self.sent.labels(org)
        for depth in await overview_repo.queue_depths(db):
            org = str(depth.organization_id)
            snap.queue[org] = (depth.queued, max(0.0, depth.oldest_s or 0.0))
            snap.in_flight[org] = depth.sending
        snap.deliveries_pending = await deliveries_repo.pending_by_plugin(db)
        await self._read_latencies()

    async def _read_latencies(self) -> None:
        """Observe the send latencies of the queue's status changes since the last scrape."""
        if self._outbox_cursor is None:
            await self._start_cursor()
            return
        # Every status change after the cursor (in id order, a batch at most), so that the
        # cursor moves past changes that are not counted as well.
        changes = await outbox_repo.status_changes_after(self.db, after=self._outbox_cursor,
                                                         limit=LATENCY_BATCH)
        for change in changes:
            self._outbox_cursor = max(self._outbox_cursor, change.id)
            sent_at = change.sent_at
            if change.status not in ("SENT", "DELIVERED", "READ") or sent_at is None:
                continue
            org = str(change.organization_id)
            if not change.was_sent:
                self.send_latency.labels(org, "queued_to_sent").observe(
                    _seconds(change.created_at, sent_at))
            delivered_at = change.delivered_at
            if (change.status in ("DELIVERED", "READ") and not change.was_delivered
                    and delivered_at is not None):
                self.send_latency.labels(org, "sent_to_delivered").observe(
                    _seconds(sent_at, delivered_at))

    async def render(self) -> bytes:
        """A fresh scrape in Prometheus' text format."""
        await self.refresh()
        return generate_latest(self.registry)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds())
