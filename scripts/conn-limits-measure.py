#!/usr/bin/env python3
"""Measures what held-open connections cost a running server, for docs/limits.md.

Opens N connections to the HTTP port that each send half a request head (the slowloris shape of issue 14), then
reports the server's RSS before and with them open, how long a normal request took meanwhile, how many of them
the server had closed after the header read timeout, and the same for N connections to the gRPC port that send
nothing. Standard library only; every connection targets 127.0.0.1.

  scripts/conn-limits-measure.py --pid PID --http 127.0.0.1:8080 --grpc 127.0.0.1:50051 --connections 5000 \
      [--only http|grpc]
"""
import argparse
import asyncio
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def open_connections(host, port, n, payload):
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection(host, port)
        if payload:
            writer.write(payload)
        conns.append((reader, writer))
    return conns


async def closed_count(conns):
    async def is_closed(reader):
        # Reads what the server sent (a 408, or gRPC's SETTINGS frame) until EOF or a quiet 50 ms.
        try:
            while True:
                if await asyncio.wait_for(reader.read(4096), 0.05) == b"":
                    return True
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True

    results = await asyncio.gather(*(is_closed(r) for r, _ in conns))
    return sum(results)


async def healthz_ms(host, port):
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:40]
    return (time.perf_counter() - start) * 1e3


async def case(name, pid, host, port, n, payload, wait, probe):
    before = rss_mib(pid)
    started = time.perf_counter()
    conns = await open_connections(host, port, n, payload)
    opened_s = time.perf_counter() - started
    await asyncio.sleep(1)
    held = rss_mib(pid)
    normal = await healthz_ms(*probe)
    await asyncio.sleep(max(0.0, wait - (time.perf_counter() - started)))
    closed = await closed_count(conns)
    for _, w in conns:
        w.close()
    print(
        f"{name}: {n} connections opened in {opened_s:.1f} s; RSS {before:.0f} -> {held:.0f} MiB "
        f"({(held - before) * 1024 / n:.1f} KiB each); /healthz meanwhile {normal:.1f} ms; "
        f"closed by the server after {wait:.0f} s: {closed}/{n}"
    )


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--http", default="127.0.0.1:8080")
    p.add_argument("--grpc", default="127.0.0.1:50051")
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--wait", type=float, default=16, help="seconds after opening before counting closed ones")
    p.add_argument("--only", choices=["http", "grpc"], help="one case (RSS per connection is clearest on a fresh server)")
    a = p.parse_args()
    http = a.http.rsplit(":", 1)
    grpc = a.grpc.rsplit(":", 1)
    probe = (http[0], int(http[1]))
    half = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
    if a.only in (None, "http"):
        await case("HTTP half header", a.pid, http[0], int(http[1]), a.connections, half, a.wait, probe)
    if a.only in (None, "grpc"):
        await case("gRPC silent", a.pid, grpc[0], int(grpc[1]), a.connections, b"", a.wait, probe)


asyncio.run(main())
