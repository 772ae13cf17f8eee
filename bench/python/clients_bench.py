"""The Python client's bench driver (bench/lib/clients-python.ts runs it with the project's venv).

  overhead: client CPU per scoped lease (`with client.lease(pool): pass`) against two bare unary calls
            (Acquire + Release) of the same stack, grpcio generated stubs on a plain channel; sync or asyncio.
  goodput:  the rate-limited scenario of bench/run.ts through AsyncClient.call_with_retry: Poisson arrivals,
            each request one provider call under a lease, retried within its budget.

Prints one JSON object. CPU is this process's (user + system, every thread: grpcio's own included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any, Awaitable, Callable

import grpc
import grpc.aio

from keymesh_client import AsyncClient, Client, Lease
from keymesh_client.v1 import pool_pb2, pool_pb2_grpc


def cpu_s() -> float:
    return time.process_time()


def _summary(scoped: list[float], bare: list[float], leases: int, pairs: int) -> dict[str, Any]:
    ratios = [s / b for s, b in zip(scoped, bare)]
    return {
        "rounds": [{"scoped_us": round(s, 1), "bare_us": round(b, 1)} for s, b in zip(scoped, bare)],
        "cpu_per_scoped_lease_us": round(statistics.median(scoped), 1),
        "cpu_per_bare_pair_us": round(statistics.median(bare), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "leases": leases,
        "pairs": pairs,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def overhead_sync(addr: str, pool: str, ops: int, rounds: int, warmup: int) -> dict[str, Any]:
    holder = "bench/python"
    channel = grpc.insecure_channel(addr)
    stub = pool_pb2_grpc.KeyPoolServiceStub(channel)
    client = Client(addr)

    def bare() -> None:
        lease = stub.Acquire(pool_pb2.AcquireRequest(pool=pool, holder=holder), timeout=10)
        stub.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id), timeout=10)

    def scoped() -> None:
        with client.lease(pool, holder=holder):
            pass

    def measure(fn: Callable[[], None], n: int) -> float:
        t0 = cpu_s()
        for _ in range(n):
            fn()
        return (cpu_s() - t0) / n * 1e6

    try:
        measure(bare, warmup)
        measure(scoped, warmup)
        s: list[float] = []
        b: list[float] = []
        for i in range(rounds):
            # Alternate which side goes first, so a change of the machine's load hits both alike.
            if i % 2 == 0:
                b.append(measure(bare, ops))
                s.append(measure(scoped, ops))
            else:
                s.append(measure(scoped, ops))
                b.append(measure(bare, ops))
        return _summary(s, b, ops * rounds, ops * rounds)
    finally:
        client.close()
        channel.close()


async def overhead_asyncio(addr: str, pool: str, ops: int, rounds: int, warmup: int) -> dict[str, Any]:
    holder = "bench/python"
    channel = grpc.aio.insecure_channel(addr)
    stub = pool_pb2_grpc.KeyPoolServiceStub(channel)
    client = AsyncClient(addr)

    async def bare() -> None:
        lease = await stub.Acquire(pool_pb2.AcquireRequest(pool=pool, holder=holder), timeout=10)
        await stub.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id), timeout=10)

    async def scoped() -> None:
        async with client.lease(pool, holder=holder):
            pass

    async def measure(fn: Callable[[], Awaitable[None]], n: int) -> float:
        t0 = cpu_s()
        for _ in range(n):
            await fn()
        return (cpu_s() - t0) / n * 1e6

    try:
        await measure(bare, warmup)
        await measure(scoped, warmup)
        s: list[float] = []
        b: list[float] = []
        for i in range(rounds):
            if i % 2 == 0:
                b.append(await measure(bare, ops))
                s.append(await measure(scoped, ops))
            else:
                s.append(await measure(scoped, ops))
                b.append(await measure(bare, ops))
        return _summary(s, b, ops * rounds, ops * rounds)
    finally:
        await client.close()
        await channel.close()


class _RateLimited(Exception):
    """The provider refused the call (classified by the client from status_code and response.headers)."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(f"provider answered {status_code}")
        self.status_code = status_code
        self.response = type("Response", (), {"status_code": status_code, "headers": headers})()


class _Provider:
    """POST /v1/chat/completions over pooled keep-alive HTTP/1.1 connections: the least an HTTP client
    does, so the CPU figure is the KeyMesh client's and not an HTTP library's."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        self._host, self._port = host, int(port or 80)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).encode()

    async def complete(self, key: str) -> tuple[int, dict[str, str]]:
        while self._idle:
            reader, writer = self._idle.pop()
            try:
                return await self._exchange(reader, writer, key)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed the idle connection (its keep-alive timeout): another one.
                writer.close()
        return await self._exchange(*await asyncio.open_connection(self._host, self._port), key)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> tuple[int, dict[str, str]]:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (self._host.encode(), key.encode(), len(self._body), self._body)
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, headers

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


async def goodput(addr: str, pool: str, provider_url: str, rate: float, seconds: float, warmup: float, budget: float) -> dict[str, Any]:
    rng = random.Random(7)
    results: list[tuple[float, bool, str]] = []
    provider = _Provider(provider_url)
    provider_calls = 0
    rate_limited = 0
    first_error: list[str] = []

    async with AsyncClient(addr) as client:

        async def call(lease: Lease) -> None:
            nonlocal provider_calls, rate_limited
            provider_calls += 1
            status, headers = await provider.complete(lease.key)
            if status == 429:
                rate_limited += 1
            if status != 200:
                raise _RateLimited(status, headers)
            lease.report(status=200, headers=headers)

        async def one(arrived: float) -> None:
            try:
                await client.call_with_retry(pool, call, budget_s=budget)
                results.append((arrived, True, ""))
            except Exception as error:  # a request that failed within its budget is counted, not raised
                results.append((arrived, False, type(error).__name__))
                first_error.append(str(error)[:200])

        start = time.monotonic()
        end = start + warmup + seconds
        lags: list[float] = []

        async def ticker() -> None:
            # How late the event loop runs a 10 ms timer: how far this process falls behind its arrivals.
            while time.monotonic() < end:
                due = time.monotonic() + 0.01
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - due)

        ticking = asyncio.create_task(ticker())
        tasks: set[asyncio.Task[None]] = set()
        cpu_measured_from = None
        at = start
        while True:
            at += rng.expovariate(rate)
            if at >= end:
                break
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if cpu_measured_from is None and at >= start + warmup:
                cpu_measured_from = cpu_s()
            task = asyncio.create_task(one(at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        await ticking
        cpu_measured = cpu_s() - (cpu_measured_from if cpu_measured_from is not None else 0.0)
    provider.close()

    measured = [r for r in results if r[0] >= start + warmup]
    ok = sum(1 for r in measured if r[1])
    failed_by: dict[str, int] = {}
    for r in measured:
        if not r[1]:
            failed_by[r[2]] = failed_by.get(r[2], 0) + 1
    offered = len(measured)
    return {
        "scenario": "python_asyncio",
        "offered_rps": rate,
        "seconds": seconds,
        "requests": offered,
        "succeeded": ok,
        "failed": offered - ok,
        "failed_by": failed_by,
        "first_error": first_error[0] if first_error else "",
        "provider_calls": provider_calls,
        "rate_limited_answers": rate_limited,
        "success_per_sec": ok / seconds,
        "goodput_pct": round(100 * ok / (rate * seconds), 2),
        "failed_pct": round(100 * (offered - ok) / offered, 2) if offered else 0.0,
        # Over the measured window (the requests still in flight at its end finished first).
        "client_cpu_us_per_request": round(cpu_measured / max(offered, 1) * 1e6, 1),
        "event_loop_lag_ms": {
            "p50": round(statistics.median(lags) * 1000, 1) if lags else 0.0,
            "p99": round(sorted(lags)[int(len(lags) * 0.99)] * 1000, 1) if lags else 0.0,
            "max": round(max(lags) * 1000, 1) if lags else 0.0,
        },
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["overhead", "goodput"])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--stack", choices=["sync", "asyncio"], default="sync")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--provider", default="")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup-seconds", type=float, default=2)
    parser.add_argument("--budget", type=float, default=5)
    a = parser.parse_args()
    if a.mode == "overhead":
        if a.stack == "sync":
            out = overhead_sync(a.addr, a.pool, a.ops, a.rounds, a.warmup)
        else:
            out = asyncio.run(overhead_asyncio(a.addr, a.pool, a.ops, a.rounds, a.warmup))
    else:
        out = asyncio.run(goodput(a.addr, a.pool, a.provider, a.rate, a.seconds, a.warmup_seconds, a.budget))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
