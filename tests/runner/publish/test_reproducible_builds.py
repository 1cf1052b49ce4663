"""Reproducible builds, end to end: real stand-in builds through BuildSandbox, compared.

Two builds of the stand-in's boot profile (kernel, initramfs, SYSLINUX and an EFI system
partition, as real mkarchiso makes them), seconds apart, give byte-identical ISOs.
With any one of the base's reproducibility wrappers taken away (a read-only overlay over
the base puts a link to the real tool in its place) two builds differ, and the rebuild
check's comparison, itself run in the sandbox, names where: pacman's install dates inside
the airootfs image, xorriso's file dates, or the EFI system partition made by mkfs.fat.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from runner.publish.isocompare import compare_isos
from sandbox import BuildSandbox, SandboxConfig, SandboxError
from tests.conftest import require, require_root, require_tool

pytestmark = pytest.mark.integration

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
EPOCH = 1700000000
UID_BASE = 2147352576
#: Each wrapper, the real tool it stands in front of in the stand-in base, and a
#: difference the comparison must report when it is gone.
WRAPPERS = {
    "pacman": (
        "/usr/bin/pacman",
        "/arch/x86_64/airootfs.sfs:/var/lib/pacman/local/isorunner-base-1.0-1/desc (content)",
    ),
    "xorriso": ("/usr/bin/xorriso", "/arch/version (mtime)"),
    # The boot profile's ESP: El Torito's UEFI image, appended as a partition.
    "mkfs.fat": ("/usr/sbin/mkfs.fat", "(El Torito boot image 2) (content)"),
}


@pytest.fixture(scope="module")
def standin() -> Path:
    """The stand-in base and its minimal profile."""
    require_root()
    require_tool("systemd-nspawn")
    require(
        (STANDIN / "base" / "usr" / "local" / "sbin" / "xorriso").is_file()
        and (STANDIN / "profiles" / "boot" / "efiboot").is_dir()
        and (STANDIN / "repo" / "isorunner.db").is_file(),
        f"the stand-in base with the reproducibility wrappers in {STANDIN}",
    )
    return STANDIN


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A sandbox_root on disk (not tmpfs), removed afterwards."""
    path = Path("/var/tmp") / f"isorunner-repro-{os.getpid()}-{tmp_path.name}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(base: Path, root: Path) -> SandboxConfig:
    """A sandbox over `base` with test-sized limits."""
    return SandboxConfig(
        base_dir=base,
        sandbox_root=root,
        memory_limit=1 << 30,
        cpus=2.0,
        pids_limit=512,
        timeout_seconds=300.0,
        warning_seconds=290.0,
        min_free_bytes=1 << 30,
        max_disk_bytes=2 << 30,
        machine_prefix=f"repro{os.getpid()}",
    )


class Log:
    """Collects a run's log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


async def build(sandbox: BuildSandbox, profile: Path, build_id: str, keep: Path) -> Path:
    """Build `profile` in the sandbox and move its ISO to `keep`; return that path."""
    log = Log()
    try:
        result = await sandbox.run(
            build_id,
            profile,
            source_date_epoch=EPOCH,
            log_sink=log,
            # The stand-in packages as package sync lays out a build's repository: the
            # pacman wrapper clamps the install dates of what the build installs from it.
            package_repo=STANDIN / "repo",
        )
    except SandboxError as exc:
        tail = "\n".join(log.lines[-40:])
        raise AssertionError(f"build {build_id} failed: {exc}\n{tail}") from exc
    (iso,) = result.isos
    await anyio.Path(keep).mkdir(parents=True, exist_ok=True)
    target = keep / iso.name
    await anyio.to_thread.run_sync(shutil.move, iso, target)
    await sandbox.discard(build_id)
    return target


async def build_twice(sandbox: BuildSandbox, profile: Path, work: Path) -> tuple[Path, Path]:
    """Two builds of `profile`, the second started in a later wall-clock second."""
    first = await build(sandbox, profile, "repro-a", work / "a")
    await anyio.sleep(1.0 + (1.0 - time.time() % 1.0))
    return first, await build(sandbox, profile, "repro-b", work / "b")


def digest(path: Path) -> str:
    """SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def profile(standin: Path, tmp_path: Path) -> Path:
    """A copy of the stand-in's boot profile."""
    target = tmp_path / "profile"
    shutil.copytree(standin / "profiles" / "boot", target, symlinks=True)
    return target


@pytest.mark.anyio
async def test_two_builds_of_the_standin_profile_are_byte_identical(
    standin: Path, root: Path, profile: Path, tmp_path: Path
) -> None:
    """Built seconds apart through the sandbox, the ISOs are byte-identical, ESP included."""
    sandbox = BuildSandbox(config(standin / "base", root))
    first, second = await build_twice(sandbox, profile, tmp_path / "isos")
    assert digest(first) == digest(second)
    report = await anyio.run_process(
        ["xorriso", "-indev", str(first), "-report_system_area", "plain"]
    )
    listing = report.stdout.decode()
    # The EFI system partition, appended (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
    assert "28732ac11ff8d211ba4b00a0c93ec93b" in listing
    differences = await compare_isos(sandbox, first, second, run_id="repro-cmp", log_sink=Log())
    assert differences == []


@pytest.fixture
def without_wrapper(
    standin: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """The base with one wrapper replaced by a link to the real tool (a read-only overlay)."""
    tool = request.param
    real, _ = WRAPPERS[tool]
    layer = tmp_path / "layer"
    sbin = layer / "usr" / "local" / "sbin"
    sbin.mkdir(parents=True)
    (sbin / tool).symlink_to(real)
    for directory in (layer, layer / "usr", layer / "usr" / "local", sbin):
        os.chown(directory, UID_BASE, UID_BASE)
        directory.chmod(0o755)
    os.lchown(sbin / tool, UID_BASE, UID_BASE)
    merged = Path("/var/tmp") / f"isorunner-repro-base-{os.getpid()}-{tmp_path.name}"
    merged.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"ro,lowerdir={layer}:{standin / 'base'}", str(merged)],
        check=True,
    )  # fmt: skip
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)
        merged.rmdir()


@pytest.mark.anyio
@pytest.mark.parametrize("without_wrapper", list(WRAPPERS), indirect=True)
async def test_builds_differ_without_any_one_wrapper(
    without_wrapper: Path, root: Path, profile: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Without one wrapper two builds differ, and the comparison names the leak's path."""
    tool = request.node.callspec.params["without_wrapper"]
    sandbox = BuildSandbox(config(without_wrapper, root))
    first, second = await build_twice(sandbox, profile, tmp_path / "isos")
    assert digest(first) != digest(second)
    differences = await compare_isos(sandbox, first, second, run_id="repro-cmp", log_sink=Log())
    assert WRAPPERS[tool][1] in [str(d) for d in differences]
