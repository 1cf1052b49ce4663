"""End to end across a crash: `kill -9` of the server mid-build, then a restart.

The server gets its own state here (it is killed); the fake forge outlives it, as a
real forge would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    GITHUB_TOKEN,
    Isorunner,
    Repos,
    final_status,
    github_push,
    make_profile,
    make_server,
    new_sha,
    sandbox_leftovers,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

CRASHY = "acme/crashy"
DONE = final_status("success", "failure", "error")
# The build waits until this many seconds after the push: long enough to be killed
# mid-build, short enough that the re-run after the restart does not wait long.
HOLD_SECONDS = 10


@pytest.fixture
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve`, stopped (or already killed) at the end."""
    running = make_server(state_root, forge, Repos(github=[CRASHY]), upstream)
    running.start()
    yield running
    running.close()


def test_kill_9_mid_build_then_restart_reruns_the_build_and_leaves_no_sandbox(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A build cut by `kill -9` is re-run after the restart and reported, leaving nothing behind."""
    sha = new_sha()
    # profiledef.sh runs inside the container: hold the build until a wall-clock time.
    until = int(time.time()) + HOLD_SECONDS
    hold = f'while [ "$(date +%s)" -lt {until} ]; do sleep 0.2; done'
    forge.seed_github(
        CRASHY, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "hold", append=hold)}
    )
    build_id = server.github("push", github_push(CRASHY, sha, "refs/heads/main"))
    running = server.wait_in_container(build_id)
    # What the final check looks for is there while the build runs.
    assert any(item.startswith("mount ") for item in running), running
    assert any(item.startswith("cgroup ") for item in running), running
    assert time.time() < until - 2, "the build started too late to be killed mid-build"

    server.kill()
    server.start()

    statuses = server.wait_statuses(forge, "github", CRASHY, sha, DONE, timeout=HOLD_SECONDS + 60)
    record = server.wait_finished(build_id)

    assert record["state"] == "succeeded", record
    states = [(s.state, s.description) for s in statuses]
    assert states[-1][0] == "success", states
    assert {state for state, _ in states[:-1]} == {"pending"}, states
    # Queued, running; after the restart queued and running again.
    assert [d for _, d in states].count("Building the ISO") == 2, states
    assert "build_interrupted_by_restart" in server.log.read_text()
    assert sandbox_leftovers(server, build_id) == []
