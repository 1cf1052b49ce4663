"""Integration tests of BuildSandbox: real systemd-nspawn, real cgroups, the stand-in base.

Every attack is written into the profile's profiledef.sh, which mkarchiso sources as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import overlay
from sandbox.cgroups import parent_dirs, parse_proc_cgroup
from sandbox.config import SandboxConfig
from sandbox.exceptions import (
    BuildFailed,
    DiskLimit,
    OutOfMemory,
    OutputRejected,
    ProcessLimit,
    TimedOut,
)
from sandbox.host import detect_host
from sandbox.sandbox import BuildSandbox
from tests.conftest import require, require_root, require_tool

pytestmark = pytest.mark.integration

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC


@pytest.fixture
def standin() -> Path:
    """The stand-in base, its minimal profile and its packages as a build repository."""
    require_root()
    require_tool("systemd-nspawn")
    require(
        (STANDIN / "base" / "build" / "output").is_dir()
        and (STANDIN / "profiles" / "minimal" / "profiledef.sh").is_file()
        and (STANDIN / "repo" / "isorunner.db").is_file(),
        f"the stand-in base in {STANDIN} (run tests/standin/build-standin.sh)",
    )
    return STANDIN


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A sandbox_root of this test alone, on disk (not tmpfs), removed afterwards.

    Unique per run, as is the machine prefix derived from it (see `_config`), so that
    runs of these tests side by side never see each other's containers or cgroups.
    """
    path = Path(tempfile.mkdtemp(prefix="isorunner-it-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(standin: Path, root: Path, **overrides: object) -> SandboxConfig:
    values: dict[str, object] = {
        "machine_prefix": "it" + hashlib.sha256(str(root).encode()).hexdigest()[:10],
        "base_dir": standin / "base",
        "sandbox_root": root,
        "memory_limit": 1 << 30,
        "cpus": 2.0,
        "pids_limit": 512,
        "timeout_seconds": 120.0,
        "warning_seconds": 100.0,
        "min_free_bytes": 1 << 30,
        "disk_check_seconds": 0.2,
        "max_disk_bytes": 2 << 30,
    }
    values.update(overrides)
    return SandboxConfig(**values)  # type: ignore[arg-type]


def _profile(standin: Path, tmp_path: Path, attack: str = "") -> Path:
    profile = tmp_path / "profile"
    shutil.copytree(standin / "profiles" / "minimal", profile, symlinks=True)
    with (profile / "profiledef.sh").open("a") as handle:
        handle.write("\n" + attack + "\n")
    return profile


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _host_state() -> tuple[str, str]:
    return (
        Path("/proc/sys/kernel/core_pattern").read_text(),
        Path("/sys/fs/cgroup/memory/release_agent").read_text(),
    )


def _inspect_iso(iso: Path, tmp_path: Path) -> tuple[str, Path]:
    """Return the ISO's PVD info and the extracted airootfs."""
    pvd = _run(["xorriso", "-indev", str(iso), "-pvd_info"])
    extracted = tmp_path / "iso"
    _run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(extracted)])
    (sfs,) = extracted.rglob("airootfs.sfs")
    airootfs = tmp_path / "airootfs"
    _run(["unsquashfs", "-d", str(airootfs), str(sfs)])
    return pvd, airootfs


def _assert_nothing_left(config: SandboxConfig) -> None:
    builds = config.sandbox_root / "builds"
    assert not builds.exists() or not any(builds.iterdir())
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(config.sandbox_root) not in mounts
    # Not even the empty per-instance directory: isorunner removes what it made.
    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    for parent in parent_dirs(detect_host(), own, config.machine_prefix).values():
        assert not parent.exists(), parent


@pytest.mark.anyio
async def test_build_sandbox_run_builds_an_iso_with_the_given_date_and_metadata(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """The minimal profile builds an ISO dated SOURCE_DATE_EPOCH keeping suid, caps, owners."""
    require_tool("xorriso")
    require_tool("unsquashfs")
    config = _config(standin, root)
    sandbox = BuildSandbox(config)
    log = Log()
    result = await sandbox.run(
        "it-ok",
        _profile(standin, tmp_path),
        source_date_epoch=EPOCH,
        package_repo=standin / "repo",
        log_sink=log,
    )
    (iso,) = result.isos
    pvd, airootfs = _inspect_iso(iso, tmp_path)
    assert "Creation Time: 2023111422132000" in pvd
    suid = (airootfs / "usr/bin/isorunner-suid").stat()
    assert suid.st_mode & 0o4000
    assert suid.st_uid == 0
    caps = _run(["getcap", str(airootfs / "usr/bin/isorunner-fcap")])
    assert "cap_net_raw" in caps
    assert (airootfs / "var/lib/isorunner-svc").stat().st_uid == 970
    await sandbox.discard("it-ok")
    _assert_nothing_left(config)


ATTACKS = {
    "network": "timeout 5 bash -c 'exec 3<>/dev/tcp/151.101.2.132/80' && echo ESCAPED; "
    "[ $(grep -c : /proc/net/dev) -gt 1 ] && echo ESCAPED",
    "write-base": "touch /etc/isorunner-pwned && echo ESCAPED; "
    "mount -o remount,rw / && echo ESCAPED",
    "read-host": "cat /var/tmp/isorunner-canary-* /proc/1/root/var/tmp/isorunner-canary-* "
    "&& echo ESCAPED; env | grep -q ISORUNNER_TEST_SECRET && echo ESCAPED",
    "block-device": "head -c1 /dev/vda && echo ESCAPED; "
    "mknod /tmp/vda b 253 0 && head -c1 /tmp/vda && echo ESCAPED",
    "kernel-module": 'perl -e \'my $a = ""; syscall(313, 0, $a, 0) == 0 and print "ESCAPED\\n"; '
    'print "finit_module: $!\\n"\' || true',
    "proc-sys": "echo x > /proc/sys/kernel/core_pattern && echo ESCAPED; mkdir /tmp/p && "
    "mount -t proc proc /tmp/p && echo '|/tmp/x' > /tmp/p/sys/kernel/core_pattern && echo ESCAPED",
    "release-agent": "mkdir /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && "
    "echo /tmp/x > /tmp/cg/release_agent && echo ESCAPED",
    "open-by-handle": 'perl -e \'syscall(304, -100, 0, 0) == 0 and print "ESCAPED\\n"; '
    'print "open_by_handle_at: $!\\n"\' || true',
}


#: The error each attack must meet inside the container.
DENIALS = {
    "network": "Network is unreachable",
    "write-base": "Read-only file system",
    "read-host": "No such file or directory",
    "block-device": "Operation not permitted",
    "kernel-module": "finit_module: Operation not permitted",
    "proc-sys": "Read-only file system",
    "release-agent": "release_agent: Permission denied",
    "open-by-handle": "open_by_handle_at: Operation not permitted",
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_build_sandbox_contains_profile_attacks(
    standin: Path, root: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attack from profiledef.sh fails inside; the host is unchanged; the build fails."""
    canary = Path("/var/tmp") / f"isorunner-canary-{os.getpid()}-{tmp_path.name}"
    canary.write_text("host secret\n")
    monkeypatch.setenv("ISORUNNER_TEST_SECRET", "s3cr3t")
    before = _host_state()
    config = _config(standin, root)
    log = Log()
    try:
        with pytest.raises(BuildFailed) as info:
            await BuildSandbox(config).run(
                f"it-{name}",
                _profile(standin, tmp_path, ATTACKS[name] + "\nexit 42"),
                source_date_epoch=EPOCH,
                package_repo=standin / "repo",
                log_sink=log,
            )
    finally:
        canary.unlink()
    assert info.value.exit_code == 42, log.text
    assert "ESCAPED" not in log.text
    assert "host secret" not in log.text
    assert DENIALS[name] in log.text, log.text
    assert not (config.base_dir / "etc" / "isorunner-pwned").exists()
    assert _host_state() == before
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_reports_out_of_memory(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """Exhausting memory ends the build with 'out of memory (limit 64M)'."""
    config = _config(standin, root, memory_limit=64 << 20)
    with pytest.raises(OutOfMemory, match=r"out of memory \(limit 64M\)"):
        await BuildSandbox(config).run(
            "it-oom",
            _profile(standin, tmp_path, "tail /dev/zero\nexit 1"),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
        )
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_contains_a_fork_bomb(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """A fork bomb hits the pids cap and the build ends with ProcessLimit."""
    config = _config(standin, root, pids_limit=64)
    with pytest.raises(ProcessLimit, match="limit 64"):
        await BuildSandbox(config).run(
            "it-forkbomb",
            _profile(standin, tmp_path, "f(){ f|f& }; f; sleep 2; exit 1"),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
        )
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_enforces_the_cpu_quota(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """Two busy loops for 2 s under a 0.5 CPU quota use at most half the wall time in CPU."""
    config = _config(standin, root, cpus=0.5)
    burn = "timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'; wait"
    result = await BuildSandbox(config).run_command(
        "it-cpu",
        _profile(standin, tmp_path),
        ["/bin/sh", "-c", burn],
        source_date_epoch=EPOCH,
        package_repo=standin / "repo",
        log_sink=Log(),
    )
    assert result.cpu_seconds is not None
    # Unlimited, two loops on two cores would use ~4 s; the quota allows 0.5 s per second.
    assert 0.2 < result.cpu_seconds <= 0.5 * result.duration_seconds * 1.1 + 0.1
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_stops_a_build_that_fills_the_output(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """Writing past max_output_bytes stops the build with DiskLimit and removes the output."""
    config = _config(standin, root, max_output_bytes=32 << 20)
    with pytest.raises(DiskLimit, match="output exceeded 32M"):
        await BuildSandbox(config).run(
            "it-disk",
            _profile(
                standin,
                tmp_path,
                "while :; do head -c 8M /dev/zero >> /build/output/fill; sleep 0.05; done",
            ),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
        )
    _assert_nothing_left(config)


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["/build/work/fill", "/build/output/fill.iso"])
async def test_build_sandbox_fails_a_build_that_fills_its_disk_at_the_cap(
    standin: Path, root: Path, tmp_path: Path, target: str
) -> None:
    """A profile writing until the disk is full fails with "disk limit reached" at the cap.

    The build's disk is allocated in full when the build starts and never grows: while
    the profile writes, the image on the host stays at `max_disk_bytes`.
    """
    cap = 256 << 20
    config = _config(standin, root, max_disk_bytes=cap, max_output_bytes=1 << 30)
    log = Log()
    profile = _profile(
        standin,
        tmp_path,
        # After ENOSPC the profile lingers: the sandbox must stop it, not the timeout.
        f"dd if=/dev/zero of={target} bs=1M; sleep 100",
    )
    image = overlay.BuildDirs.of(config, "it-fill").disk_image
    sizes: list[int] = []

    async def watch() -> None:
        while True:
            with contextlib.suppress(FileNotFoundError):
                sizes.append(image.stat().st_blocks * 512)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        with pytest.raises(DiskLimit, match="disk limit reached") as caught:
            await BuildSandbox(config).run(
                "it-fill", profile, source_date_epoch=EPOCH, log_sink=log
            )
    finally:
        watcher.cancel()
    assert "sandbox.max_disk_bytes" in str(caught.value)
    # Allocated at the start; however much the profile wrote, the host gave no more
    # than the cap (and a few blocks for the image's own extent tree).
    assert sizes
    assert max(sizes) <= cap + (1 << 20)
    _assert_nothing_left(config)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "poison",
    [
        "ln -s /etc/shadow /build/output/evil.iso",
        "mkfifo /build/output/evil.iso",
        "truncate -s 1G /build/output/evil.iso",
        "touch /build/output/a.iso && ln /build/output/a.iso /build/output/b.iso",
    ],
)
async def test_build_sandbox_rejects_poisoned_output(
    standin: Path, root: Path, tmp_path: Path, poison: str
) -> None:
    """Links, FIFOs, sparse files and hard links in the output are refused, none followed."""
    config = _config(standin, root)
    with pytest.raises(OutputRejected, match="rejected"):
        await BuildSandbox(config).run(
            "it-poison",
            _profile(standin, tmp_path, poison),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
        )
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_timeout_leaves_nothing_running(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """At the timeout every process is killed, after the warning; no mount or cgroup is left."""
    config = _config(standin, root, timeout_seconds=2.0, warning_seconds=0.5)
    warned: list[bool] = []

    async def on_warning() -> None:
        warned.append(True)

    with pytest.raises(TimedOut, match="timed out after 2 s"):
        await BuildSandbox(config).run(
            "it-timeout",
            _profile(standin, tmp_path, "(setsid sleep 1000 &); nohup sleep 1001 & sleep 1002"),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
            on_warning=on_warning,
        )
    assert warned == [True]
    # Exactly the build's sleeps: another `sleep 100` on the host is not ours.
    left = {line.strip() for line in _run(["ps", "-eo", "args"]).splitlines()}
    assert left.isdisjoint({"sleep 1000", "sleep 1001", "sleep 1002"})
    _assert_nothing_left(config)


@pytest.mark.anyio
async def test_build_sandbox_cancellation_cleans_up_like_a_timeout(
    standin: Path, root: Path, tmp_path: Path
) -> None:
    """Cancelling the task running a build kills the container and removes everything."""
    config = _config(standin, root)
    task = asyncio.create_task(
        BuildSandbox(config).run(
            "it-cancel",
            _profile(standin, tmp_path, "sleep 1003"),
            source_date_epoch=EPOCH,
            package_repo=standin / "repo",
            log_sink=Log(),
        )
    )
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ps = _run(["ps", "-eo", "args"])
    assert "sleep 1003" not in ps
    _assert_nothing_left(config)
