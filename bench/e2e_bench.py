"""End-to-end overhead: signed tag push → release published, minus the time in mkarchiso.

Run by hand, as root, with the stand-in base built (tests/standin/build-standin.sh):

    uv run python bench/e2e_bench.py [--runs N] [--iso-mib 200] [--dir DIR]

Starts the fake forge (tests/e2e/fakeforge.py, in a thread of this process, behind a
thin ASGI layer that timestamps every request) and a real `isorunner serve` (a
subprocess, configured as the e2e tests configure it: tests/e2e/conftest.py), seeds one
GitHub repository with one commit and one release tag per run, and delivers a signed
`push` of each tag. The profile is the stand-in's minimal one plus one mksquashfs
pseudo file: `-p 'blob f 644 0 0 head -c N /dev/urandom'` in
`airootfs_image_tool_options`, so mkarchiso itself writes N MiB of random bytes into the
squashfs (`-noD`: stored, not compressed) and the ISO is ~N MiB while the profile
archive stays a few KiB. (A random file under airootfs/ would make the same ISO, but
then every run would also fetch and extract a 200 MB profile, which real profiles are
not: their size comes from packages.)

Markers, all on this machine's wall clock:

- the webhook POST sent, and its 202 (this process);
- the build log lines as they appear (a thread polls logs/<id>.log every 2 ms):
  `[isorunner] build N`, `fetching`, `SOURCE_DATE_EPOCH=` (profile fetched and
  extracted), the first and last `[mkarchiso]` lines (mkarchiso's own time: from its
  first output line to its last, the `-r` removal of its work dir included),
  `release … queued` (the files are kept), and `succeed:` (the outcome, written after
  clean-up; the release is published after it, from the outbox);
- the artifacts: the ISO's ctime (set when the pipeline moves it out of the sandbox's
  output, i.e. after the sandbox's teardown) and the mtime of `sha256sums` (written
  once both sums are computed);
- the fake forge: when each request arrived and when its answer ended (the release
  look-ups, the uploads, `PATCH` draft → published, the commit statuses).

The fake forge listens on a socket made with `IPPROTO_TCP`, unlike
tests/e2e/fakeforge.py (see `TimedForge`); `--stock-forge-socket` measures with its
socket instead. Prints each run's timeline, parts and forge requests, then the medians.
Removes what it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.e2e.conftest import (
    GITHUB_SECRET,
    GITHUB_TOKEN,
    STANDIN,
    Isorunner,
    Repos,
    config_text,
    free_port,
    github_push,
    make_profile,
    new_sha,
)
from tests.e2e.fakeforge import FakeForge, create_app
from tests.e2e.fakeforge_openapi import DEFAULT_SPECS, OpenApiCheck
from tests.e2e.fakeforge_state import ForgeState
from tests.runner.packages.upstream import UPSTREAM, serve_upstream

REPO = "bench/e2e"
POLL = 0.002
BUILD_TIMEOUT = 600.0


# -- the fake forge, timestamped ---------------------------------------------------------------


@dataclass(slots=True)
class Hit:
    """One request the fake forge answered: when it arrived and when its answer ended."""

    method: str
    path: str
    start: float
    end: float = 0.0
    status: int = 0


class Timing:
    """ASGI layer that timestamps every HTTP request around the fake forge's app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the request's arrival, status and end, passing everything through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hit = Hit(str(scope["method"]), str(scope["path"]), time.time())
        with self._lock:
            self.hits.append(hit)

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                hit.status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                hit.end = time.time()

        await self.app(scope, receive, timed_send)

    def since(self, start: float) -> list[Hit]:
        """The requests that arrived at or after `start`, oldest first."""
        with self._lock:
            return [h for h in self.hits if h.start >= start]


class TimedForge:
    """The fake forge served by uvicorn from a thread, behind `Timing`."""

    def __init__(self, workdir: Path, *, stock_socket: bool) -> None:
        # asyncio sets TCP_NODELAY on accepted connections only when the listening
        # socket's `proto` is IPPROTO_TCP; fakeforge's own socket has proto 0, so every
        # answer after the first on a kept-alive connection waits ~40 ms for a delayed
        # ACK (Nagle). `stock_socket` keeps that behaviour, to show what it costs.
        proto = 0 if stock_socket else socket.IPPROTO_TCP
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        state = ForgeState(workdir, f"http://127.0.0.1:{port}", f"http://localhost:{port}")
        self.timing = Timing(create_app(state, OpenApiCheck(DEFAULT_SPECS)))
        config = uvicorn.Config(
            self.timing, http="h11", lifespan="off", log_level="warning", access_log=False
        )
        self.forge = FakeForge(state, port)
        self._sock = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])), daemon=True
        )

    def start(self) -> None:
        """Start serving; return once uvicorn listens."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake forge did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()


# -- the build log, timestamped --------------------------------------------------------------


class LogTail:
    """Stamps each line of a build log with the time this process first read it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.path.exists():
            if self._stop.wait(POLL):
                return
        pending = b""
        with self.path.open("rb") as log:
            while True:
                data = log.read()
                now = time.time()
                if data:
                    pending += data
                    *whole, pending = pending.split(b"\n")
                    self.lines.extend((now, line.decode("utf-8", "replace")) for line in whole)
                elif self._stop.wait(POLL):
                    return

    def stop(self) -> None:
        """Stop following (after one last read)."""
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()

    def first(self, prefix: str) -> float:
        """When the first line starting with `prefix` appeared."""
        return next(t for t, line in self.lines if line.startswith(prefix))

    def last(self, prefix: str) -> float:
        """When the last line starting with `prefix` appeared."""
        return [t for t, line in self.lines if line.startswith(prefix)][-1]


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """The markers of one build and the parts computed from them."""

    build_id: int
    iso_bytes: int
    marks: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)


def deliver(client: httpx.Client, url: str, body: bytes) -> tuple[int, float, float]:
    """POST a signed GitHub `push`; return the build id, when it was sent and the 202."""
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    sent = time.time()
    response = client.post(f"{url}/webhooks/github", content=body, headers=headers)
    accepted = time.time()
    if response.status_code != 202:
        raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
    return int(response.json()["build_id"]), sent, accepted


def wait_final_status(forge: TimedForge, sha: str, server: Isorunner) -> None:
    """Wait until the forge holds a final status for `sha`."""
    deadline = time.monotonic() + BUILD_TIMEOUT
    while time.monotonic() < deadline:
        seen = forge.forge.statuses("github", REPO, sha)
        if seen and seen[-1].state in {"success", "failure", "error"}:
            if seen[-1].state != "success" or "release refused" in str(seen[-1].description):
                raise RuntimeError(f"build failed: {seen[-1]}\n{server.log_tail()}")
            # The build's success comes first; the release's status follows it.
            if str(seen[-1].description).endswith("release published"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"no final status within {BUILD_TIMEOUT} s\n{server.log_tail()}")


def measure(client: httpx.Client, server: Isorunner, forge: TimedForge, sha: str, tag: str) -> Run:
    """Deliver the tag push, wait for its final status, and compute the timeline."""
    body = github_push(REPO, sha, f"refs/tags/{tag}", message=f"Release {tag}")
    # The build id is the next row; the tail starts before the delivery so no line is missed.
    next_id = 1 + max((int(p.stem) for p in (server.root / "logs").glob("*.log")), default=0)
    tail = LogTail(server.root / "logs" / f"{next_id}.log")
    build_id, sent, accepted = deliver(client, server.url, body)
    if build_id != next_id:
        raise RuntimeError(f"expected build {next_id}, got {build_id}")
    wait_final_status(forge, sha, server)
    tail.stop()
    hits = forge.timing.since(sent)
    artifacts = server.root / "artifacts" / str(build_id)
    (iso,) = artifacts.glob("*.iso")
    statuses = [h for h in hits if h.method == "POST" and "/statuses/" in h.path]
    uploads = [h for h in hits if h.path.startswith("/github/uploads/")]
    (publish,) = [h for h in hits if h.method == "PATCH" and "/releases/" in h.path]
    lookups = [h for h in hits if h.method == "GET" and "/releases" in h.path]
    marks = {
        "webhook sent": sent,
        "202": accepted,
        "log: build started": tail.first(f"[isorunner] build {build_id}:"),
        "log: fetching": tail.first("[isorunner] fetching"),
        "log: SOURCE_DATE_EPOCH": tail.first("[isorunner] SOURCE_DATE_EPOCH="),
        "log: first [mkarchiso]": tail.first("[mkarchiso]"),
        "log: last [mkarchiso]": tail.last("[mkarchiso]"),
        "ISO moved (ctime)": iso.stat().st_ctime,
        "sha256sums written": (artifacts / "sha256sums").stat().st_mtime,
        "log: release queued": tail.first("[isorunner] release "),
        "log: outcome line": tail.first("[isorunner] succeed:"),
        "forge: first release look-up": lookups[0].start,
        "forge: first upload starts": uploads[0].start,
        "forge: last upload ends": uploads[-1].end,
        "forge: release published (PATCH)": publish.end,
        "forge: final status": statuses[-1].end,
    }
    run = Run(build_id, iso.stat().st_size, marks, hits=hits)
    m = marks
    mkarchiso = m["log: last [mkarchiso]"] - m["log: first [mkarchiso]"]
    total = m["forge: release published (PATCH)"] - sent
    run.parts = {
        "total: push -> release published": total,
        "mkarchiso (first to last output line)": mkarchiso,
        "OVERHEAD = total - mkarchiso": total - mkarchiso,
        "  webhook POST -> 202": accepted - sent,
        "  202 -> build started (queue, claim)": m["log: build started"] - accepted,
        "  build started -> fetching (workspace)": m["log: fetching"] - m["log: build started"],
        "  fetch + extract profile": m["log: SOURCE_DATE_EPOCH"] - m["log: fetching"],
        "  sandbox set-up (to mkarchiso's 1st line)": (
            m["log: first [mkarchiso]"] - m["log: SOURCE_DATE_EPOCH"]
        ),
        "  sandbox teardown + ISO move": m["ISO moved (ctime)"] - m["log: last [mkarchiso]"],
        "  checksums (sha256 + b2)": m["sha256sums written"] - m["ISO moved (ctime)"],
        "  sums -> release queued": m["log: release queued"] - m["sha256sums written"],
        "  clean-up, success stored": m["log: outcome line"] - m["log: release queued"],
        "  success stored -> first release call": (
            m["forge: first release look-up"] - m["log: outcome line"]
        ),
        "  release look-up, digests, create draft": (
            m["forge: first upload starts"] - m["forge: first release look-up"]
        ),
        "  uploads (ISO + 2 sums files)": (
            m["forge: last upload ends"] - m["forge: first upload starts"]
        ),
        "  publish (PATCH draft=false)": (
            m["forge: release published (PATCH)"] - m["forge: last upload ends"]
        ),
        "after the release: final status posted": (
            m["forge: final status"] - m["forge: release published (PATCH)"]
        ),
        "push -> final status": m["forge: final status"] - sent,
        "ISO upload alone": uploads[0].end - uploads[0].start,
    }
    return run


# -- main -------------------------------------------------------------------------------------


def machine() -> str:
    """One line about the host: CPUs, model, memory, kernel."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} CPUs ({model}), {mem_gib:.0f} GiB, kernel {os.uname().release}"


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Run the benchmark and print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iso-mib", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="not tmpfs")
    parser.add_argument("--forge-dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument(
        "--stock-forge-socket",
        action="store_true",
        help="listen as tests/e2e/fakeforge.py does (no TCP_NODELAY: +40 ms per reused call)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or not (STANDIN / "base").is_dir():
        sys.exit(f"needs root and the stand-in base in {STANDIN}")

    root = Path(tempfile.mkdtemp(prefix="isorunner-bench-e2e-", dir=args.dir))
    forge_dir = Path(tempfile.mkdtemp(prefix="isorunner-bench-e2e-forge-", dir=args.forge_dir))
    forge = TimedForge(forge_dir, stock_socket=args.stock_forge_socket)
    server: Isorunner | None = None
    upstream = contextlib.ExitStack()
    try:
        forge.start()
        mirror = upstream.enter_context(serve_upstream(UPSTREAM / "www"))
        blob = f"blob f 644 0 0 head -c {args.iso_mib << 20} /dev/urandom"
        options = f"airootfs_image_tool_options=('-comp' 'gzip' '-noD' '-p' '{blob}')"
        profile = make_profile(root / "profiles", "big", append=options)
        # One warm-up build, then the measured ones; each its own commit and tag.
        tags = [(f"v0.{n}", new_sha()) for n in range(args.runs + 1)]
        forge.forge.seed_github(
            REPO,
            token=GITHUB_TOKEN,
            commits={sha: profile for _, sha in tags},
            refs=dict(tags),
        )
        state = root / "state"
        state.mkdir()
        port = free_port()
        config = config_text(state, port, forge.forge, Repos(github=[REPO]), mirror)
        config = config.replace("timeout_seconds = 60", "timeout_seconds = 600")
        config = config.replace("warning_seconds = 50", "warning_seconds = 550")
        (state / "isorunner.toml").write_text(config)
        server = Isorunner(state, state / "isorunner.toml", port, state / "isorunner.log")
        server.start()
        print(f"machine: {machine()}; load {loadavg()}")
        print(f"fake forge socket: {'stock (proto 0)' if args.stock_forge_socket else 'TCP'}")
        print(f"isorunner serve pid {server.proc.pid if server.proc else '?'}, port {port}")

        runs: list[Run] = []
        with httpx.Client(timeout=10) as client:
            # Pack every archive now: the fake forge builds each on its first download.
            for _, sha in tags:
                url = f"{forge.forge.github_api_url}/repos/{REPO}/tarball/{sha}"
                auth = {"Authorization": f"Bearer {GITHUB_TOKEN}"}
                client.get(url, headers=auth, follow_redirects=True).raise_for_status()
            for number, (tag, sha) in enumerate(tags):
                load = loadavg()
                subprocess.run(["sync"], check=True)
                run = measure(client, server, forge, sha, tag)
                label = f"run {number}" if number else "warm-up"
                print(f"\n{label}: build {run.build_id}, ISO {run.iso_bytes} bytes, load {load}")
                start = run.marks["webhook sent"]
                for name, at in run.marks.items():
                    print(f"  {at - start:8.3f} s  {name}")
                for name, seconds in run.parts.items():
                    print(f"  {name:<46}{seconds:8.3f} s")
                print("  forge requests (arrival, time to answer):")
                for hit in run.hits:
                    where = hit.path.split(REPO, 1)[-1]
                    print(
                        f"  {hit.start - start:8.3f} s {(hit.end - hit.start) * 1000:7.1f} ms  "
                        f"{hit.status} {hit.method} {where}"
                    )
                if number:
                    runs.append(run)
        print(f"\nmedians of {len(runs)} runs (ISO {runs[0].iso_bytes / 1e6:.0f} MB):")
        for name in runs[0].parts:
            values = [r.parts[name] for r in runs]
            each = " ".join(f"{v:.3f}" for v in values)
            print(f"  {name:<46}{statistics.median(values):8.3f} s   ({each})")
        overhead = statistics.median(r.parts["OVERHEAD = total - mkarchiso"] for r in runs)
        verdict = "met" if overhead < 2 else "MISSED"
        print(f"overhead {overhead:.3f} s: target < 2 s {verdict}; load at the end {loadavg()}")
        print(json.dumps([r.parts for r in runs]), file=sys.stderr)
    finally:
        upstream.close()
        if server is not None:
            server.close()
        forge.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(forge_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
