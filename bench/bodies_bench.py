"""Bodies in flight (run by hand): peak memory of the intake under slow senders of 25 MiB.

    uv run python bench/bodies_bench.py [--clients 200] [--baseline-clients 40]

Starts the real intake app (`webhooks.app.create_app`, 25 MiB body cap, production
uvicorn settings) in its own process, then opens slow clients over 127.0.0.1: each
declares a 25 MiB GitHub delivery and sends it at ~2.5 MiB/s. Prints the server's peak
resident memory (VmHWM) and how the clients were answered, side by side for:

- `bounded`: the default budget for bodies in flight (64 MiB): past it, 503 unread;
- `unbounded`: the same app with a budget too large to matter, as before the budget
  existed (every body is read whole). With `--baseline-clients` clients only: 200
  unbounded 25 MiB bodies would take 5 GiB.

The server side of one run is `python bench/bodies_bench.py --serve PORT --budget B`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from runner.service import freeze_startup_objects
from tests.webhooks.fakes import MemoryStore
from webhooks.app import create_app
from webhooks.build import Forge
from webhooks.config import RepoRule, WebhookConfig

MIB = 1024 * 1024
BODY = 25 * MIB
DEFAULT_BUDGET = 64 * MIB
RATE = 2.5 * MIB  # bytes per second per client
PIECE = 256 * 1024


def serve(port: int, budget: int) -> None:
    store = MemoryStore()
    config = WebhookConfig(
        public_url="http://127.0.0.1",
        repos=(RepoRule(Forge.GITHUB, "bench/bodies"),),
        github_secret=SecretStr("bench-webhook-secret-of-some-length"),
        max_bodies_in_flight_bytes=budget,
    )
    app = create_app(config, sink=store, catalog=store, clock=lambda: datetime.now(UTC))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
    )
    freeze_startup_objects()
    server.run()


def _head() -> bytes:
    return (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
        "X-GitHub-Delivery: d\r\nX-Hub-Signature-256: sha256=00\r\n"
        f"Content-Length: {BODY}\r\nConnection: close\r\n\r\n"
    ).encode()


async def client(port: int) -> str:
    """Send one slow 25 MiB delivery; return the answer's status code, or the failure."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return type(exc).__name__
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        writer.write(_head())
        sent = 0
        while sent < BODY and not answer.done():
            writer.write(b"x" * PIECE)
            sent += PIECE
            await writer.drain()
            await asyncio.sleep(PIECE / RATE)
        head = await asyncio.wait_for(answer, timeout=120)
        return head.split(b" ", 2)[1].decode()
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        answer.cancel()
        writer.close()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(clients: int, budget: int) -> tuple[int, int, collections.Counter[str], float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--budget", str(budget)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        idle = rss(server.pid)
        start = time.monotonic()

        async def all_clients() -> list[str]:
            return await asyncio.gather(*(client(port) for _ in range(clients)))

        answers = collections.Counter(asyncio.run(all_clients()))
        return idle, peak_rss(server.pid), answers, time.monotonic() - start
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--baseline-clients", type=int, default=40)
    parser.add_argument("--serve", type=int)
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.budget)
        return
    rows = [
        ("bounded", args.clients, DEFAULT_BUDGET),
        ("bounded", args.baseline_clients, DEFAULT_BUDGET),
        ("unbounded", args.baseline_clients, 1 << 60),
    ]
    print(f"slow senders of {BODY // MIB} MiB at {RATE / MIB:.1f} MiB/s each")
    print(f"{'budget':<10} {'clients':>7} {'idle MiB':>9} {'peak MiB':>9} {'wall s':>7}  answers")
    results = {}
    for name, clients, budget in rows:
        idle, peak, answers, wall = run(clients, budget)
        results[(name, clients)] = peak
        shown = ", ".join(f"{count}x {code}" for code, count in sorted(answers.items()))
        print(
            f"{name:<10} {clients:>7} {idle / MIB:>9.1f} {peak / MIB:>9.1f} {wall:>7.1f}  {shown}"
        )
    ratio = (
        results[("unbounded", args.baseline_clients)] / results[("bounded", args.baseline_clients)]
    )
    print(f"peak unbounded / bounded at {args.baseline_clients} clients: {ratio:.1f}x")


if __name__ == "__main__":
    main()
