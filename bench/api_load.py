"""A load generator for the control API that costs the server little: worker processes, each
with keep-alive HTTP/1.1 connections over TCP or the unix socket, writing ready-made requests and
reading answers (status line, `Content-Length` body). Every answer must have the expected status;
anything else stops the run with the answer.

`run_load` spreads `clients` connections over `processes` workers (each an asyncio loop), runs
them for `seconds` after a common start, and answers the latencies, the count and the workers'
own CPU time (to show the client is not the bottleneck).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Where to connect: `host:port` for TCP, or a unix socket path."""

    tcp: tuple[str, int] | None = None
    unix: str | None = None


@dataclass(frozen=True)
class Job:
    """One connection's work: its requests, sent in turn (cycling), each expecting `status`."""

    requests: Sequence[bytes]
    status: int


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    """User and system CPU of the worker processes during the run."""


def http_request(method: str, path: str, *, token: str | None = None,
                 body: bytes | None = None) -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: wad"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
                    expected: int) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    if status != expected:
        raise RuntimeError(f"answered {status}, expected {expected}: {body[:300]!r}")


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if target.unix is not None:
        return await asyncio.open_unix_connection(target.unix)
    assert target.tcp is not None
    return await asyncio.open_connection(*target.tcp)


async def _connection(target: Target, job: Job, start_at: float, stop_at: float,
                      latencies: list[float]) -> None:
    """One keep-alive connection's loop. A connection the server closed between answers (its
    keep-alive limit) is opened again, as HTTP clients do; that exchange is not timed."""
    reader, writer = await _open(target)
    try:
        await _exchange(reader, writer, job.requests[0], job.status)  # the connection is warm
        await asyncio.sleep(max(0.0, start_at - time.time()))
        i = 1
        while time.time() < stop_at:
            request = job.requests[i % len(job.requests)]
            began = time.perf_counter()
            try:
                await _exchange(reader, writer, request, job.status)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                writer.close()
                reader, writer = await _open(target)
                await _exchange(reader, writer, request, job.status)
                i += 1
                continue
            latencies.append(1000 * (time.perf_counter() - began))
            i += 1
    finally:
        writer.close()


def _worker(target: Target, jobs: list[Job], start_at: float, stop_at: float,
            out: multiprocessing.connection.Connection) -> None:
    latencies: list[float] = []

    async def main() -> None:
        await asyncio.gather(*(_connection(target, job, start_at, stop_at, latencies)
                               for job in jobs))

    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        asyncio.run(main())
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out.send(("ok", latencies, cpu))
    except BaseException as exc:
        out.send(("error", f"{type(exc).__name__}: {exc}", 0.0))
    finally:
        out.close()


def run_load(target: Target, jobs: Sequence[Job], *, processes: int, seconds: float,
             warmup_s: float = 1.0) -> LoadResult:
    """Run every job on its own connection, spread over `processes` workers, for `seconds`
    (after `warmup_s` to start the workers and open the connections)."""
    processes = max(1, min(processes, len(jobs)))
    start_at = time.time() + warmup_s
    stop_at = start_at + seconds
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for w in range(processes):
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(target=_worker, args=(
            target, list(jobs[w::processes]), start_at, stop_at, send), daemon=True)
        worker.start()
        send.close()
        pipes.append(receive)
        workers.append(worker)
    result = LoadResult(wall_s=seconds)
    errors = []
    for receive in pipes:
        kind, payload, cpu = receive.recv()
        if kind == "ok":
            result.latencies_ms.extend(payload)
            result.client_cpu_s += cpu
        else:
            errors.append(payload)
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"load worker failed: {errors[0]}")
    return result


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds a process used so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
