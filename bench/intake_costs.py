"""What one webhook delivery must cost isorunner, beside the bare route's budget.

Run by hand, never in tests: `uv run python bench/intake_costs.py --bare-rps 26499`
(the bare route's requests/s from `bench/intake_bench.py` on the same machine).

Issue 2 asks for at least 60 % of a bare Starlette route's throughput. On one core,
that leaves each delivery `1 / (0.6 * bare) - 1 / bare` seconds of CPU for everything
the bare route does not do. This script measures, in one process and on one core,
the CPU time of each piece of that work in isolation, on the same ~3.2 KB push as the
load test, and prints them against that budget:

- `verify`: the HMAC-SHA256 check of `X-Hub-Signature-256` (`verify_github`);
- `receive`: everything `webhooks.github.receive` does (headers, HMAC, JSON parsing
  and validation with pydantic, the repository rule), which includes `verify`;
- `store`: `runner.store.deliveries.submit` (dedupe look-ups and the insert) for 50
  deliveries in one transaction, per delivery, without the commit's fsync;
- `log`: one `delivery_accepted` line through the production logging (console
  format, to /dev/null);
- `answer`: building the JSON 202 answer (`JSONResponse`).

Each figure is the median over `--rounds` of `--number` calls (CPU time per call).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import structlog
from intake_bench import REPO, push_payload
from pydantic import SecretStr
from starlette.responses import JSONResponse

from runner.logs import configure_logging
from runner.store import deliveries
from runner.store.schema import migrate
from webhooks import github
from webhooks.build import BuildRequest, Forge
from webhooks.config import RepoRule, WebhookConfig
from webhooks.verify import verify_github

SECRET = "bench-secret-" + uuid.uuid4().hex


def per_call(fn: Callable[[], object], number: int, rounds: int) -> float:
    """Median CPU seconds per call of `fn` over `rounds` runs of `number` calls."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(number):
            fn()
        samples.append((time.process_time() - start) / number)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bare-rps", type=float, required=True, help="bare route req/s")
    parser.add_argument("--share", type=float, default=0.6, help="target share of bare")
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    body = json.dumps(push_payload(1, random.Random(1)), separators=(",", ":")).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": str(uuid.uuid4()),
        "x-github-hook-id": "1",
        "x-hub-signature-256": signature,
    }
    config = WebhookConfig(
        public_url="http://127.0.0.1",
        repos=(RepoRule(forge=Forge.GITHUB, name=REPO, branches=("main",)),),
        github_secret=SecretStr(SECRET),
    )
    now = datetime.now(UTC)
    request = github.receive(headers, body, config, received_at=now)
    assert isinstance(request, BuildRequest)

    costs: dict[str, float] = {}
    costs["verify"] = per_call(
        lambda: verify_github(body, signature, SecretStr(SECRET)), args.number, args.rounds
    )
    costs["receive"] = per_call(
        lambda: github.receive(headers, body, config, received_at=now), args.number, args.rounds
    )

    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        conn = sqlite3.connect(Path(work) / "costs.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, "costs.db")
        counter = iter(range(10**9))
        group = 50

        def submit_group() -> None:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(group):
                n = next(counter)
                unique = replace(request, delivery_id=f"d{n}", commit_sha=f"{n:040x}")
                deliveries.submit(conn, now, unique, None)
            conn.execute("COMMIT")

        costs["store"] = per_call(submit_group, args.number // group, args.rounds) / group
        conn.close()

    with open("/dev/null", "w") as devnull:
        saved, sys.stderr = sys.stderr, devnull
        try:
            configure_logging(log_format="console", secrets=[SecretStr(SECRET)])
            log = structlog.get_logger()
            costs["log"] = per_call(
                lambda: log.info(
                    "delivery_accepted",
                    forge="github",
                    repo=request.repo,
                    ref=request.ref,
                    commit_sha=request.commit_sha,
                    delivery_id=request.delivery_id,
                    build_id=123456,
                    duplicate=False,
                ),
                args.number,
                args.rounds,
            )
        finally:
            sys.stderr = saved
    costs["answer"] = per_call(
        lambda: JSONResponse({"build_id": 123456, "url": "http://127.0.0.1/builds/123456"}, 202),
        args.number,
        args.rounds,
    )

    bare = 1 / args.bare_rps
    budget = 1 / (args.share * args.bare_rps) - bare
    print(f"{len(body)} B push; CPU time per call, median of {args.rounds} x {args.number}")
    print(f"bare route: {args.bare_rps:.0f} req/s = {bare * 1e6:.1f} us per request")
    print(f"budget at {args.share:.0%} of bare: {budget * 1e6:.1f} us per delivery beyond it\n")
    for name, cost in costs.items():
        note = " (part of receive)" if name == "verify" else ""
        print(f"{name:8s} {cost * 1e6:7.1f} us{note}")
    needed = sum(cost for name, cost in costs.items() if name != "verify")
    print(f"{'sum':8s} {needed * 1e6:7.1f} us (receive + store + log + answer)")
    ceiling = 1 / (bare + needed)
    print(
        f"\nwith nothing else at all (no routing, no futures, no fsync thread): at most"
        f" {ceiling:.0f} req/s = {ceiling / args.bare_rps:.2f} of bare"
    )


if __name__ == "__main__":
    main()
