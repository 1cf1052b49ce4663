"""Build logs under load: serving a 50 MB log, and 100 clients following a live log.

Run by hand, never in tests: `uv run python bench/logserve_bench.py`.

1. Download: a 50 MB log file is served by isorunner (`GET /builds/1/log`, uvicorn,
   the app from `webhooks.app.create_app`) and by `python3 -m http.server` on the same
   file, one after the other; curl fetches it `--rounds` times from each (to
   /dev/null) and reports time to first byte and throughput (medians). The isorunner
   server's RSS is read from /proc before the first and after the last download.
2. Live: isorunner serves a running build; 100 SSE clients (httpx, in this process)
   follow `GET /builds/1/log/stream` while a writer appends `--lines` lines at
   `--rate` lines/s, then marks the build succeeded. Every client must receive every
   line exactly once, in order, and the `end` event. The server's CPU use over the run
   is read from /proc/<pid>/stat (utime + stime).

Servers run as child processes (this file with `--serve`), so their RSS and CPU are
their own. Everything lives in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- server side


def serve(directory: Path, port: int) -> None:
    """Serve build 1 (log `<dir>/1.log`, state from `<dir>/state`) with uvicorn."""
    # Imported in the child only, after putting the repository on the path (the
    # script runs from bench/, where `tests` and `webhooks` are not importable).
    sys.path.insert(0, str(ROOT))
    import uvicorn  # noqa: PLC0415

    from tests.runner.store.samples import make_request  # noqa: PLC0415
    from webhooks.app import create_app  # noqa: PLC0415
    from webhooks.build import BuildRecord, BuildState  # noqa: PLC0415
    from webhooks.config import WebhookConfig  # noqa: PLC0415

    request = make_request()
    started = datetime(2025, 1, 1, tzinfo=UTC)

    class FileStateCatalog:
        async def get(self, build_id: int) -> BuildRecord | None:
            if build_id != 1:
                return None
            state = BuildState((directory / "state").read_text().strip())
            return BuildRecord(1, request, state, started, started)

        async def submit(self, request: object) -> object:
            raise NotImplementedError

    class Logs:
        def existing(self, build_id: int) -> Path | None:
            path = directory / f"{build_id}.log"
            return path if path.is_file() else None

    catalog = FileStateCatalog()
    app = create_app(
        WebhookConfig(public_url=f"http://127.0.0.1:{port}", repos=()),
        sink=catalog,  # type: ignore[arg-type]
        catalog=catalog,
        logs=Logs(),
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- measuring


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start(args: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def curl(url: str) -> tuple[float, float, int]:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def download(directory: Path, size_mb: int, rounds: int) -> None:
    log = directory / "1.log"
    line = (
        b"[mkarchiso] INFO: Installing packages to '/build/work/x86_64/airootfs/'... 0123456789\n"
    )
    with log.open("wb") as handle:
        for _ in range(size_mb * 1024 * 1024 // len(line)):
            handle.write(line)
    (directory / "state").write_text("succeeded")
    size = log.stat().st_size
    ours_port, static_port = free_port(), free_port()
    ours = start([sys.executable, __file__, "--serve", str(directory), str(ours_port)])
    static = start(
        [sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1"],
        cwd=directory,
    )
    try:
        wait_port(ours_port)
        wait_port(static_port)
        rss_before = rss_mib(ours.pid)
        results = {}
        for name, url in (
            ("isorunner GET /builds/1/log", f"http://127.0.0.1:{ours_port}/builds/1/log"),
            ("python3 -m http.server", f"http://127.0.0.1:{static_port}/1.log"),
        ):
            curl(url)  # warm-up (page cache, imports)
            runs = [curl(url) for _ in range(rounds)]
            assert all(r[2] == size for r in runs), "short download"
            ttfb = statistics.median(r[0] for r in runs) * 1000
            total = statistics.median(r[1] for r in runs)
            results[name] = (ttfb, total, size / total / 1e6)
        rss_after = rss_mib(ours.pid)
    finally:
        for process in (ours, static):
            process.terminate()
            process.wait(10)
    print(f"\n1. Download of a {size / 1e6:.1f} MB log, median of {rounds} curl runs")
    print(f"{'server':32} {'TTFB (ms)':>10} {'total (s)':>10} {'MB/s':>8}")
    for name, (ttfb, total, rate) in results.items():
        print(f"{name:32} {ttfb:10.2f} {total:10.3f} {rate:8.0f}")
    ratio = results["isorunner GET /builds/1/log"][2] / results["python3 -m http.server"][2]
    print(f"throughput ratio isorunner / http.server: {ratio:.2f} (target >= 0.8)")
    print(f"isorunner server RSS: {rss_before:.1f} MiB before, {rss_after:.1f} MiB after")


async def follow(url: str, client: httpx.AsyncClient, lines: list[str], ended: list[bool]) -> None:
    async with client.stream("GET", url) as response:
        event = "message"
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                if event == "end":
                    ended.append(True)
                    return
                lines.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line == "":
                event = "message"


async def live(directory: Path, clients: int, count: int, rate: float) -> None:
    log = directory / "2.log"
    (directory / "state").write_text("running")
    log.write_bytes(b"")
    (directory / "1.log").unlink(missing_ok=True)
    log.rename(directory / "1.log")
    log = directory / "1.log"
    port = free_port()
    server = start([sys.executable, __file__, "--serve", str(directory), str(port)])
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/builds/1/log/stream"
        limits = httpx.Limits(max_connections=clients + 10)
        received: list[list[str]] = [[] for _ in range(clients)]
        ended: list[list[bool]] = [[] for _ in range(clients)]
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            tasks = [
                asyncio.create_task(follow(url, client, received[n], ended[n]))
                for n in range(clients)
            ]
            await asyncio.sleep(1.0)  # let every client connect
            cpu0, wall0, rss0 = cpu_seconds(server.pid), time.monotonic(), rss_mib(server.pid)
            expected = []
            write0 = time.monotonic()
            with log.open("a", encoding="utf-8") as handle:
                for n in range(count):
                    text = f"[mkarchiso] line {n:06d} <b>&amp;</b> " + "x" * 60
                    expected.append(text)
                    handle.write(text + "\n")
                    handle.flush()
                    await asyncio.sleep(1 / rate)
            written = count / (time.monotonic() - write0)
            (directory / "state").write_text("succeeded")
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            cpu1, wall1, rss1 = cpu_seconds(server.pid), time.monotonic(), rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    complete = sum(1 for got in received if got == expected)
    finished = sum(1 for e in ended if e)
    cores = (cpu1 - cpu0) / (wall1 - wall0)
    print(f"\n2. {clients} SSE clients following one live log, {count} lines")
    print(f"writer: {written:.0f} lines/s (asked {rate:g}/s; it shares a loop with the clients)")
    print(f"clients with every line once, in order: {complete}/{clients}")
    print(f"clients that got the end event: {finished}/{clients}")
    used, wall = cpu1 - cpu0, wall1 - wall0
    print(f"server CPU: {used:.2f} s over {wall:.1f} s wall = {cores:.2f} cores (target < 1)")
    print(f"server RSS: {rss0:.1f} MiB at start, {rss1:.1f} MiB at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {os.uname().release}")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        download(Path(tmp), args.size_mb, args.rounds)
        asyncio.run(live(Path(tmp), args.clients, args.lines, args.rate))


if __name__ == "__main__":
    main()
