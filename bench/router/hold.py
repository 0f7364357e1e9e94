#!/usr/bin/env python3
"""Hold N idle keep-alive connections to a proxy (scripts/bench-router).

Each connection sends one GET (HTTP/1.1, keep-alive), reads the whole
answer and then stays open and idle, as a browser's connection between
clicks. Opens at most --parallel at a time. Once all are open (or
--open-timeout passed) it writes "<open> <failed>" to --ready-file, then
holds them until --hold seconds pass or stdin closes, and exits: bounded in
count and time, it stops by itself.

Usage: hold.py PORT N --host web.localhost --ready-file F [--hold 30]
"""
import argparse
import asyncio
import os
import resource
import sys


async def one(port, host, conns, failed, sem, deadline):
    async with sem:
        if asyncio.get_running_loop().time() > deadline:
            failed.append("deadline")
            return
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corral-bench-hold\r\n\r\n".encode())
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 200"):
                raise RuntimeError(lines[0])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip().lower()
            if "content-length" in headers:
                await asyncio.wait_for(r.readexactly(int(headers["content-length"])), 10)
            elif headers.get("transfer-encoding") == "chunked":
                await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 10)
            if headers.get("connection") == "close":
                raise RuntimeError("the proxy closes the connection")
            conns.append((r, w))
        except Exception as e:  # noqa: BLE001 - counted and reported
            failed.append(repr(e))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--host", default="web.localhost")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--hold", type=float, default=30)
    p.add_argument("--parallel", type=int, default=200)
    p.add_argument("--open-timeout", type=float, default=60)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    loop = asyncio.get_running_loop()
    conns, failed = [], []
    sem = asyncio.Semaphore(a.parallel)
    deadline = loop.time() + a.open_timeout
    await asyncio.gather(*(one(a.port, a.host, conns, failed, sem, deadline) for _ in range(a.n)))
    with open(a.ready_file + ".tmp", "w") as f:
        f.write(f"{len(conns)} {len(failed)}\n")
    os.replace(a.ready_file + ".tmp", a.ready_file)
    if failed:
        print(f"hold.py: {len(failed)} connections failed, first: {failed[0]}", file=sys.stderr)
    # Hold until --hold passes (or the script, done reading, ends us).
    await asyncio.sleep(a.hold)
    for _, w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
