"""Webhook intake under load: isorunner against a bare route and adnanh/webhook.

Run by hand, never in tests: `uv run python bench/intake_bench.py --seconds 15`.

Pre-generates N distinct signed ~3 KB GitHub `push` deliveries (a new commit SHA and
a new `X-GitHub-Delivery` each, so every delivery to isorunner is a new build) and
replays them with wrk (`bench/intake.lua`, one thread, 50 connections, `--latency`)
over 127.0.0.1 against three servers, one at a time, each after a short warm-up:

- bare: a Starlette route that reads the body and answers 202, storing nothing (the
  ceiling), under the same uvicorn settings as isorunner (`bench/intake_app.py`);
- webhook: adnanh/webhook with a `payload-hmac-sha256` rule on `X-Hub-Signature-256`
  that runs `/bin/true` (answers 202 once the rule matched, before the command ends,
  which is its default; a mismatch answers 401);
- isorunner: `webhooks.app.create_app` over a real `SQLiteStore` (WAL,
  `synchronous=FULL`) on a fresh file, opened in a lifespan hook.

By default wrk is pinned to CPU 0 and the server (all its threads and children) to
CPU 1 with taskset. After the isorunner run the server is stopped (its lifespan closes
the store) and the database is checked: every build id answered with 202 must be a
row, and the row count is compared with the 202s. Prints a table (req/s, p50, p99,
server and client CPU, statuses) and the ratios against the targets of issue 2.
Everything is made under a temporary directory in /var/tmp, deleted at the end unless
`--keep`. The secret is random per run and never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "intake.lua"
APP = HERE / "intake_app.py"
REPO = "bench/isorunner"  # must match bench/intake_app.py's rule
PY_PATH = "/webhooks/github"
HOOK_PATH = "/hooks/isorunner"

TARGETS = {"p99_ms": 25.0, "vs_bare": 0.60, "vs_webhook": 2.0}


# ------------------------------------------------------------------ deliveries


def push_payload(i: int, rng: random.Random) -> dict[str, Any]:
    """A GitHub `push` to `main` shaped like the real thing (~3 KB), new commit each."""
    sha = hashlib.sha1(f"bench-{i}-{rng.random()}".encode()).hexdigest()
    before = hashlib.sha1(f"parent-{i}-{rng.random()}".encode()).hexdigest()
    tree = hashlib.sha1(f"tree-{i}".encode()).hexdigest()
    when = (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i)).isoformat()
    owner = {
        "name": "bench",
        "email": "bench@example.org",
        "login": "bench",
        "id": 1000,
        "node_id": "MDQ6VXNlcjEwMDA=",
        "avatar_url": "https://avatars.githubusercontent.com/u/1000?v=4",
        "html_url": "https://github.com/bench",
        "type": "Organization",
        "site_admin": False,
    }
    person = {"name": "Dev Eloper", "email": "dev@example.org", "username": "dev"}
    commit = {
        "id": sha,
        "tree_id": tree,
        "distinct": True,
        "message": f"profile: bump packages, build {i}\n\nRefresh the package list and"
        " the pacman mirrorlist of the live image.",
        "timestamp": when,
        "url": f"https://github.com/{REPO}/commit/{sha}",
        "author": person,
        "committer": person,
        "added": [],
        "removed": [],
        "modified": ["packages.x86_64", "airootfs/etc/pacman.d/mirrorlist"],
    }
    return {
        "ref": "refs/heads/main",
        "before": before,
        "after": sha,
        "repository": {
            "id": 123456789,
            "node_id": "R_kgDOHbench",
            "name": "isorunner",
            "full_name": REPO,
            "private": False,
            "owner": owner,
            "html_url": f"https://github.com/{REPO}",
            "description": "archiso profile built by isorunner",
            "fork": False,
            "url": f"https://github.com/{REPO}",
            "git_url": f"git://github.com/{REPO}.git",
            "ssh_url": f"git@github.com:{REPO}.git",
            "clone_url": f"https://github.com/{REPO}.git",
            "created_at": 1700000000,
            "updated_at": "2025-01-01T00:00:00Z",
            "pushed_at": 1735689600 + i,
            "size": 321,
            "stargazers_count": 7,
            "watchers_count": 7,
            "language": "Shell",
            "default_branch": "main",
            "master_branch": "main",
            "visibility": "public",
            "topics": ["archiso", "archlinux", "ci"],
            # A few of the many URL templates GitHub puts in every repository object.
            **{
                f"{name}_url": f"https://api.github.com/repos/{REPO}/{name}{{/{name}_id}}"
                for name in ("forks", "keys", "collaborators", "hooks", "branches", "tags")
            },
        },
        "pusher": {"name": "dev", "email": "dev@example.org"},
        "sender": {
            "login": "dev",
            "id": 2000,
            "node_id": "MDQ6VXNlcjIwMDA=",
            "avatar_url": "https://avatars.githubusercontent.com/u/2000?v=4",
            "html_url": "https://github.com/dev",
            "type": "User",
            "site_admin": False,
        },
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{REPO}/compare/{before[:12]}...{sha[:12]}",
        "commits": [commit],
        "head_commit": commit,
    }


def write_deliveries(path: Path, count: int, secret: str) -> float:
    """Write `count` signed deliveries in intake.lua's format; return the mean body size."""
    rng = random.Random(2)
    key = secret.encode()
    total = 0
    with open(path, "wb") as out:
        out.write(f"{count}\n".encode())
        for i in range(count):
            body = json.dumps(push_payload(i, rng), separators=(",", ":")).encode()
            signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write(f"{uuid.uuid4()} {signature} {len(body)}\n".encode())
            out.write(body)
            total += len(body)
    return total / count


def write_hooks(path: Path, secret: str) -> None:
    """adnanh/webhook configuration: the documented HMAC-SHA256 rule, then /bin/true."""
    hooks = [
        {
            "id": "isorunner",
            "execute-command": "/bin/true",
            "response-message": "accepted",
            "success-http-response-code": 202,
            "trigger-rule-mismatch-http-response-code": 401,
            "trigger-rule": {
                "match": {
                    "type": "payload-hmac-sha256",
                    "secret": secret,
                    "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                }
            },
        }
    ]
    path.write_text(json.dumps(hooks, indent=2))
    path.chmod(0o600)


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"server exited with {proc.returncode} before listening:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"server did not listen on {port} within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (webhook's /bin/true)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(argv: list[str], port: int, log: Path, stop: signal.Signals) -> Iterator[int]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent)
        try:
            wait_listening(port, proc, log)
            yield proc.pid
        finally:
            proc.send_signal(stop)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not iowait) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait until other processes use under `limit` CPUs (1 s samples); return the last."""
    deadline = time.monotonic() + timeout
    while True:
        before = busy_seconds()
        time.sleep(1.0)
        load = busy_seconds() - before
        if load < limit or time.monotonic() >= deadline:
            return load
        print(f"  waiting: other processes use {load:.2f} CPUs", flush=True)


def pin(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu is not None else []


@dataclass
class Run:
    """One wrk run, as intake.lua's done() reported it."""

    requests: int
    duration_us: int
    errors: dict[str, int]
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float
    pos: int
    issued: int
    wrapped: int
    statuses: dict[str, int]
    build_ids: list[int]
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    other_cpu: float = 0.0
    wall_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)


def wrk(
    url: str,
    path: str,
    deliveries: Path,
    start: int,
    seconds: float,
    connections: int,
    cpu: str | None,
    out: Path,
) -> Run:
    host = url.split("//", 1)[1].rstrip("/")
    argv = [
        *pin(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url + path,
        "--",
        str(deliveries),
        path,
        str(start),
        host,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_seconds()
    wall = time.monotonic()
    done = subprocess.run(
        argv, env={**os.environ, "INTAKE_BENCH_OUT": str(out)}, capture_output=True, check=False
    )
    wall = time.monotonic() - wall
    busy = busy_seconds() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.with_suffix(".wrk").write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    data = json.loads(out.read_text())
    data["build_ids"] = [int(i) for i in data["build_ids"]]
    run = Run(**data)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run.client_cpu = used / wall
    run.other_cpu = busy / wall - run.client_cpu  # measure() subtracts the server's
    run.wall_s = wall
    return run


@dataclass
class Result:
    """One server in one round: its warm-up and measured wrk runs, and any problems."""

    name: str
    round: int
    warmup: Run
    run: Run
    notes: list[str] = field(default_factory=list)
    store: str = ""


def measure(
    name: str, round_: int, argv: list[str], path: str, port: int, args: argparse.Namespace
) -> Result:
    """Start one server, warm it up, measure it, stop it (SIGTERM, graceful)."""
    work: Path = args.work
    url = f"http://127.0.0.1:{port}"
    server_cpu = None if args.no_pin else "1"
    client_cpu = None if args.no_pin else "0"
    deliveries = work / "deliveries.txt"
    log = work / f"{name}-{round_}.log"
    with server([*pin(server_cpu), *argv], port, log, signal.SIGTERM) as pid:
        warm = wrk(
            url, path, deliveries, 0, args.warmup, args.connections, client_cpu,
            work / f"{name}-{round_}-warmup.json",
        )  # fmt: skip
        if args.quiet_cpus:
            wait_quiet(args.quiet_cpus, args.quiet_timeout)
        cpu0 = cpu_seconds(pid)
        run = wrk(
            url, path, deliveries, warm.pos, args.seconds, args.connections, client_cpu,
            work / f"{name}-{round_}.json",
        )  # fmt: skip
        used = cpu_seconds(pid) - cpu0
        run.server_cpu = used / run.wall_s
        run.other_cpu -= run.server_cpu
    return Result(name, round_, warm, run)


# ------------------------------------------------------------------ checks


def check_statuses(result: Result) -> None:
    """Note any status other than 202, and any socket error or timeout."""
    for label, run in (("warm-up", result.warmup), ("run", result.run)):
        other = {s: c for s, c in run.statuses.items() if s != "202"}
        errors = {k: v for k, v in run.errors.items() if v}
        if other or errors:
            result.notes.append(f"{label}: unexpected statuses {other} errors {errors}")
        if run.wrapped and result.name == "isorunner":
            result.notes.append(f"{label}: the deliveries ran out: raise --deliveries")


def check_store(result: Result, db: Path) -> None:
    """Compare the 202s of both wrk runs with the rows of the (closed) database."""
    runs = (result.warmup, result.run)
    accepted = sum(r.statuses.get("202", 0) for r in runs)
    sent = sum(r.issued for r in runs)
    acknowledged = {i for r in runs for i in r.build_ids}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM builds")}
    missing = len(acknowledged - ids)
    stored = len(ids)
    result.store = (
        f"{accepted} answered 202, {stored} rows stored, {missing} acknowledged ids"
        f" missing; {stored - accepted} stored but unanswered of {sent - accepted} in"
        " flight when wrk stopped"
    )
    if len(acknowledged) != accepted:
        result.notes.append(f"{accepted} 202s but {len(acknowledged)} distinct build ids")
    if missing:
        result.notes.append(f"{missing} acknowledged builds are NOT in the database")
    if not accepted <= stored <= sent:
        result.notes.append(f"{stored} rows is outside [{accepted} answered, {sent} sent]")


# ------------------------------------------------------------------ report


def machine() -> str:
    """nproc, CPU model, memory, kernel."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    total = next((ln.split()[1] for ln in mem.splitlines() if ln.startswith("Mem:")), "?")
    return f"{os.cpu_count()} CPUs ({model}), {total} GiB RAM, Linux {platform.release()}"


def stack() -> str:
    """Python, the uvicorn loop and HTTP parser actually in use, webhook's version."""
    have = {m: importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools")}
    loop = "uvloop" if have["uvloop"] else "asyncio (uvloop not installed)"
    http = "httptools" if have["httptools"] else "h11 (httptools not installed)"
    version = subprocess.run(["webhook", "-version"], capture_output=True, text=True, check=False)
    return (
        f"Python {platform.python_version()}, uvicorn loop={loop} http={http};"
        f" {version.stdout.strip()}"
    )


LABELS = {"bare": "bare Starlette 202", "webhook": "adnanh/webhook", "isorunner": "isorunner"}


def row(label: str, run: Run) -> str:
    """One line of the table."""
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(run.statuses.items()))
    return (
        f"{label:<22} {run.rps:>7.0f} {run.p50_us / 1000:>7.2f} {run.p99_us / 1000:>7.2f}"
        f" {run.server_cpu:>5.0%} {run.client_cpu:>5.0%} {max(run.other_cpu, 0):>6.2f}"
        f"  {statuses}"
    )


def report(results: list[Result]) -> None:
    """Print every run, the medians over rounds, the ratios and the checks."""
    print(
        f"{'server (round)':<22} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'srv':>5}"
        f" {'wrk':>5} {'others':>6}  statuses"
    )
    for r in results:
        print(row(f"{LABELS[r.name]} ({r.round})", r.run))
    names = [n for n in LABELS if any(r.name == n for r in results)]
    rps = {n: statistics.median(r.run.rps for r in results if r.name == n) for n in names}
    p50 = {n: statistics.median(r.run.p50_us for r in results if r.name == n) for n in names}
    p99 = {n: statistics.median(r.run.p99_us for r in results if r.name == n) for n in names}
    rounds = max(r.round for r in results)
    print(
        f"\n{'median of ' + str(rounds) + ' round(s)':<22} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for n in names:
        print(f"{LABELS[n]:<22} {rps[n]:>7.0f} {p50[n] / 1000:>7.2f} {p99[n] / 1000:>7.2f}")
    print()
    checks: list[tuple[str, float, str, float]] = []
    if "isorunner" in rps:
        checks.append(("isorunner p99 ms", p99["isorunner"] / 1000, "<", TARGETS["p99_ms"]))
        if "bare" in rps:
            checks.append(
                ("isorunner / bare", rps["isorunner"] / rps["bare"], ">=", TARGETS["vs_bare"])
            )
        if "webhook" in rps:
            ratio = rps["isorunner"] / rps["webhook"]
            checks.append(("isorunner / webhook", ratio, ">=", TARGETS["vs_webhook"]))
    for label, value, op, target in checks:
        met = value < target if op == "<" else value >= target
        print(f"{label:<22} {value:>7.2f}  target {op} {target:g}  {'met' if met else 'MISSED'}")
    for r in results:
        if r.store:
            print(f"isorunner ({r.round}) durability: {r.store}")
    problems = [f"PROBLEM {r.name} ({r.round}): {note}" for r in results for note in r.notes]
    print("\n".join(problems) if problems else "all responses 202, no socket errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="measured run per server")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up run per server")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=60_000, help="distinct deliveries")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument(
        "--only", choices=list(LABELS), action="append", help="measure only these (repeatable)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the server")
    parser.add_argument(
        "--quiet-cpus",
        type=float,
        default=0.0,
        help="before each measured run, wait until other processes use fewer CPUs than this",
    )
    parser.add_argument("--quiet-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    for tool in ("wrk", "webhook", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk webhook util-linux")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("pinning needs 2 CPUs: pass --no-pin")

    args.work = work = Path(tempfile.mkdtemp(prefix="isorunner-intake-", dir="/var/tmp"))
    try:
        secret = secrets.token_hex(32)
        (work / "secret").write_text(secret)
        (work / "secret").chmod(0o600)
        started = time.monotonic()
        size = write_deliveries(work / "deliveries.txt", args.deliveries, secret)
        write_hooks(work / "hooks.json", secret)
        del secret
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}")
        print(stack())
        print(
            f"{args.deliveries} distinct signed push deliveries, {size:.0f} B body on"
            f" average, generated in {time.monotonic() - started:.1f}s"
        )
        pinning = "no pinning" if args.no_pin else "wrk on CPU 0, server on CPU 1 (taskset)"
        print(
            f"wrk -t1 -c{args.connections} --latency --timeout 10s, {args.warmup:g}s warm-up"
            f" + {args.seconds:g}s per server, {pinning}; 'others' = CPUs used by other"
            " processes during the run\n",
            flush=True,
        )
        py = [sys.executable, str(APP)]
        wanted = [n for n in LABELS if n in (args.only or LABELS)]
        results: list[Result] = []
        for round_ in range(1, args.rounds + 1):
            # Rotate the order so that no server always runs first or last.
            shift = (round_ - 1) % len(wanted)
            for name in wanted[shift:] + wanted[:shift]:
                port = free_port()
                if name == "webhook":
                    argv = ["webhook", "-hooks", str(work / "hooks.json"), "-ip", "127.0.0.1"]
                    argv += ["-port", str(port)]
                    path = HOOK_PATH
                else:
                    for stale in work.glob("isorunner.db*"):
                        stale.unlink()  # a fresh store each round
                    argv = [*py, name, "--port", str(port), "--workdir", str(work)]
                    path = PY_PATH
                result = measure(name, round_, argv, path, port, args)
                check_statuses(result)
                if name == "isorunner":
                    check_store(result, work / "isorunner.db")
                print(row(f"  {LABELS[name]} ({round_})", result.run), flush=True)
                results.append(result)
        print()
        report(results)
        if args.keep:
            print(f"\nkept {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
