"""Tests of scripts/setup-sandbox.sh and of the stand-in builder (tests/standin).

The script's logic is tested without root through `--dry-run` (the plan it would carry
out), its refusals, and its mount/umount wrappers run against fake real tools given by
`ISORUNNER_REAL_MOUNT`/`ISORUNNER_REAL_UMOUNT`. Integration tests (root) run it for real
on small trees: manifest, mount points, ownership shift keeping setuid bits and file
capabilities, idempotency, the host keyring (real pacman-key and archlinux-keyring) and
a pre-warm of the package cache from the test upstream; and check that a second
stand-in build is a no-op. This module does I/O (subprocesses, temporary trees).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require, require_root, require_tool
from tests.runner.packages.upstream import serve_upstream

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "setup-sandbox.sh"
BUILD_STANDIN = REPO_ROOT / "tests" / "standin" / "build-standin.sh"
UID_BASE = 2147352576
SMALL_UID_BASE = 65536 * 7


def run_script(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run setup-sandbox.sh with `args` and return its completed process."""
    full_env = {"PATH": os.environ["PATH"], "LC_ALL": "C"}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
        timeout=600,  # a ceiling for a hung script, not a speed limit (a loaded host needed >120 s)
    )


def plan_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the step names of a `--dry-run` output."""
    assert result.returncode == 0, result.stderr
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("plan: ")]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A tiny root file system (owner 0 everywhere) that --from-rootfs accepts."""
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    return root


# --- arguments -----------------------------------------------------------------------


def test_setup_sandbox_help_lists_every_option() -> None:
    """--help exits 0 and documents each option."""
    result = run_script("--help")
    assert result.returncode == 0
    for option in (
        "--base",
        "--packages",
        "--archive-date",
        "--uid-base",
        "--from-rootfs",
        "--keyring-dir",
        "--no-keyring",
        "--cache-dir",
        "--mirror",
        "--dry-run",
        "--help",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--base"], "--base needs a value"),
        (["--uid-base", "abc"], "--uid-base must be a number"),
        (["--uid-base", "1000"], "non-zero multiple of 65536"),
        (["--uid-base", "0"], "non-zero multiple of 65536"),
        (["--uid-base", str(65536 * 65536)], "leaves no room"),
        (["--archive-date", "2024-01-05"], "YYYY/MM/DD"),
        (["--archive-date", "2024/02/30"], "real date"),
        (["--mirror", "ftp://m"], "--mirror must be an http(s):// URL"),
        (["--packages", "/nonexistent/list"], "is not a file"),
        (["--base", "/"], "--base must not be /"),
    ],
)
def test_setup_sandbox_refuses_bad_arguments(args: list[str], message: str) -> None:
    """Each bad argument is refused with exit status 2 and a message naming the fault."""
    result = run_script("--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_setup_sandbox_prewarm_needs_a_keyring(tmp_path: Path) -> None:
    """A pre-warm checks signatures, so --no-keyring without a keyring is refused."""
    packages = tmp_path / "packages.x86_64"
    packages.write_text("base\n")
    result = run_script(
        "--packages", packages, "--no-keyring", "--keyring-dir", tmp_path / "none", "--dry-run"
    )
    assert result.returncode == 2
    assert "drop --no-keyring" in result.stderr


def test_setup_sandbox_needs_no_package_list(tmp_path: Path) -> None:
    """The base holds the build tools only: no package list is needed."""
    result = run_script(
        "--base", tmp_path / "base", "--dry-run", env={"ISORUNNER_SETUP_HOST": "other"}
    )
    assert plan_of(result)[0] == "step_bootstrap"


def test_setup_sandbox_refuses_rootfs_without_usr(tmp_path: Path) -> None:
    """--from-rootfs refuses a directory that is not a root file system."""
    result = run_script("--from-rootfs", tmp_path, "--dry-run")
    assert result.returncode == 2
    assert "does not look like a root file system" in result.stderr


# --- the plan ------------------------------------------------------------------------

FRESH_TAIL = [
    "step_wrappers",
    "step_mount_points",
    "step_pacman_conf",
    "step_manifest",
    "step_keyring",
    "step_shift",
    "step_publish",
]


def test_setup_sandbox_plan_adopts_a_rootfs(tmp_path: Path, rootfs: Path) -> None:
    """With --from-rootfs the plan copies the tree, then prepares, shifts and publishes it."""
    result = run_script(
        "--base", tmp_path / "base", "--from-rootfs", rootfs,
        "--keyring-dir", tmp_path / "keyring", "--dry-run",
    )  # fmt: skip
    assert plan_of(result) == ["step_copy_rootfs", *FRESH_TAIL]
    assert f"step_copy_rootfs {tmp_path / 'base'}.new" in result.stdout
    assert f"  keyring: {tmp_path / 'keyring'}" in result.stdout
    assert not (tmp_path / "base").exists()
    assert not (tmp_path / "base.new").exists()


def test_setup_sandbox_plan_without_keyring_and_with_prewarm(tmp_path: Path, rootfs: Path) -> None:
    """--no-keyring leaves the keyring out; --packages adds a pre-warm after publishing."""
    packages = tmp_path / "packages.x86_64"
    packages.write_text("base\n")
    keyring = tmp_path / "keyring"
    keyring.mkdir()
    (keyring / "pubring.gpg").write_bytes(b"")
    result = run_script(
        "--base", tmp_path / "base", "--from-rootfs", rootfs, "--no-keyring",
        "--keyring-dir", keyring, "--packages", packages, "--cache-dir", tmp_path / "cache",
        "--dry-run",
    )  # fmt: skip
    tail = [step for step in FRESH_TAIL if step != "step_keyring"]
    assert plan_of(result) == ["step_copy_rootfs", *tail, "step_prewarm"]
    assert f"  packages: {packages} into {tmp_path / 'cache'}/incoming" in result.stdout


@pytest.mark.parametrize(
    ("host", "first"), [("arch", "step_pacstrap"), ("other", "step_bootstrap")]
)
def test_setup_sandbox_plan_bootstraps_by_host(tmp_path: Path, host: str, first: str) -> None:
    """An Arch host pacstraps the base; any other host uses the bootstrap tarball."""
    result = run_script(
        "--base", tmp_path / "base", "--dry-run", env={"ISORUNNER_SETUP_HOST": host}
    )
    assert plan_of(result) == [first, *FRESH_TAIL]


def test_setup_sandbox_plan_removes_a_stale_staging_dir(tmp_path: Path) -> None:
    """A staging directory left by an interrupted run is removed first."""
    (tmp_path / "base.new").mkdir()
    result = run_script(
        "--base", tmp_path / "base", "--dry-run", env={"ISORUNNER_SETUP_HOST": "other"}
    )
    assert plan_of(result) == ["step_remove_stale", "step_bootstrap", *FRESH_TAIL]


def write_manifest(base: Path, uid_base: int) -> None:
    """Write a manifest as a finished base has one."""
    (base / "etc" / "isorunner").mkdir(parents=True)
    manifest = {"source": "rootfs", "uid_base": uid_base, "uid_count": 65536}
    (base / "etc" / "isorunner" / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_setup_sandbox_plan_does_nothing_for_a_finished_base(tmp_path: Path, rootfs: Path) -> None:
    """A base with a manifest for the same UID range and a keyring is left alone."""
    write_manifest(tmp_path / "base", UID_BASE)
    keyring = tmp_path / "keyring"
    keyring.mkdir()
    (keyring / "pubring.gpg").write_bytes(b"")
    result = run_script(
        "--base", tmp_path / "base", "--from-rootfs", rootfs, "--keyring-dir", keyring,
        "--dry-run",
    )  # fmt: skip
    assert plan_of(result) == ["step_nothing"]


def test_setup_sandbox_plan_completes_a_finished_base(tmp_path: Path) -> None:
    """A finished base gets a missing keyring and a pre-warm when asked."""
    write_manifest(tmp_path / "base", UID_BASE)
    packages = tmp_path / "packages.x86_64"
    packages.write_text("base\n")
    result = run_script(
        "--base", tmp_path / "base", "--keyring-dir", tmp_path / "keyring",
        "--packages", packages, "--dry-run",
    )  # fmt: skip
    assert plan_of(result) == ["step_nothing", "step_keyring", "step_prewarm"]


def test_setup_sandbox_refuses_a_base_of_another_range(tmp_path: Path) -> None:
    """A base shifted to another UID range is refused, naming the recorded range."""
    write_manifest(tmp_path / "base", SMALL_UID_BASE)
    result = run_script("--base", tmp_path / "base", "--dry-run")
    assert result.returncode == 1
    assert f"shifted to uid_base {SMALL_UID_BASE}, not {UID_BASE}" in result.stderr


def test_setup_sandbox_refuses_an_unfinished_base(tmp_path: Path) -> None:
    """An existing base directory without a manifest is refused, not overwritten."""
    (tmp_path / "base").mkdir()
    result = run_script("--base", tmp_path / "base", "--dry-run")
    assert result.returncode == 1
    assert "has no /etc/isorunner/manifest.json" in result.stderr


# --- the mount and umount wrappers ---------------------------------------------------


@pytest.fixture
def wrappers(tmp_path: Path) -> Path:
    """The wrappers written by --wrappers-only, in <tmp>/usr/local/sbin."""
    result = run_script("--wrappers-only", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    return tmp_path / "w" / "usr" / "local" / "sbin"


@pytest.fixture
def fake_tool(tmp_path: Path) -> tuple[Path, Path]:
    """A fake real mount/umount that logs its arguments; fails when an argument is 'fail'."""
    log = tmp_path / "calls.log"
    tool = tmp_path / "fake-tool"
    tool.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" >>"$FAKE_LOG"\n'
        'for a in "$@"; do [ "$a" = fail ] && exit 32; done\nexit 0\n'
    )
    tool.chmod(0o755)
    return tool, log


def run_wrapper(wrapper: Path, tool: Path, log: Path, *args: str) -> tuple[int, list[str]]:
    """Run a wrapper against the fake tool; return its status and the calls it made."""
    env = {
        "PATH": os.environ["PATH"],
        "ISORUNNER_REAL_MOUNT": str(tool),
        "ISORUNNER_REAL_UMOUNT": str(tool),
        "FAKE_LOG": str(log),
    }
    log.unlink(missing_ok=True)
    result = subprocess.run([str(wrapper), *args], env=env, check=False, timeout=10)
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, calls


@pytest.mark.parametrize(
    "args",
    [
        ["udev", "/t/dev", "-t", "devtmpfs", "-o", "mode=0755,nosuid"],
        ["-t", "devtmpfs", "udev", "/t/dev"],
        ["--types=devtmpfs", "-o", "mode=0755", "udev", "/t/dev"],
        ["-tdevtmpfs", "udev", "/t/dev"],
    ],
)
def test_mount_wrapper_turns_devtmpfs_into_rbind(
    wrappers: Path, fake_tool: tuple[Path, Path], args: list[str]
) -> None:
    """The devtmpfs mount of pacstrap becomes a recursive, slave bind of /dev."""
    status, calls = run_wrapper(wrappers / "mount", *fake_tool, *args)
    assert status == 0
    assert calls == ["--rbind /dev /t/dev", "--make-rslave /t/dev"]


@pytest.mark.parametrize(
    "args",
    [
        ["proc", "/t/proc", "-t", "proc", "-o", "nosuid,noexec,nodev"],
        ["/run", "/t/run", "--bind", "--make-private"],
        ["shm", "/t/dev/shm", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev"],
        ["-t", "devtmpfs", "udev"],
    ],
)
def test_mount_wrapper_passes_other_mounts_unchanged(
    wrappers: Path, fake_tool: tuple[Path, Path], args: list[str]
) -> None:
    """Every mount that is not a devtmpfs on a target reaches the real mount as given."""
    status, calls = run_wrapper(wrappers / "mount", *fake_tool, *args)
    assert status == 0
    assert calls == [" ".join(args)]


def test_mount_wrapper_reports_a_failed_rbind(wrappers: Path, fake_tool: tuple[Path, Path]) -> None:
    """When the real bind fails the wrapper fails with its status and goes no further."""
    status, calls = run_wrapper(wrappers / "mount", *fake_tool, "-t", "devtmpfs", "x", "fail")
    assert status == 32
    assert calls == ["--rbind /dev fail"]


def test_umount_wrapper_detaches_target_dev_lazily(
    wrappers: Path, fake_tool: tuple[Path, Path]
) -> None:
    """The teardown list of pacstrap is unmounted in order, <target>/dev lazily, others plainly."""
    status, calls = run_wrapper(
        wrappers / "umount", *fake_tool, "/t/tmp", "/t/dev/pts", "/t/dev", "/t/proc"
    )
    assert status == 0
    assert calls == ["/t/tmp", "/t/dev/pts", "--lazy /t/dev", "/t/proc"]


def test_umount_wrapper_passes_options_through(
    wrappers: Path, fake_tool: tuple[Path, Path]
) -> None:
    """A call with options is handed to the real umount unchanged."""
    status, calls = run_wrapper(wrappers / "umount", *fake_tool, "-R", "/t/dev")
    assert status == 0
    assert calls == ["-R /t/dev"]


def test_umount_wrapper_keeps_going_and_reports_failure(
    wrappers: Path, fake_tool: tuple[Path, Path]
) -> None:
    """A failing unmount does not stop the others, and its status is returned."""
    status, calls = run_wrapper(wrappers / "umount", *fake_tool, "fail", "/t/proc")
    assert status == 32
    assert calls == ["fail", "/t/proc"]


# --- real runs (root) ----------------------------------------------------------------


def require_setup_tools() -> None:
    """Require what a real setup-sandbox.sh run needs on this host."""
    require_root()
    for tool in ("getcap", "setcap"):
        require_tool(tool)


@pytest.fixture
def special_rootfs(rootfs: Path) -> Path:
    """The tiny rootfs plus a setuid file, a file capability and a user-owned file."""
    require_setup_tools()
    suid = rootfs / "usr" / "bin" / "suid"
    suid.write_text("#!/bin/sh\n")
    suid.chmod(0o4755)
    capped = rootfs / "usr" / "bin" / "capped"
    capped.write_text("#!/bin/sh\n")
    capped.chmod(0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(capped)], check=True)
    owned = rootfs / "etc" / "owned"
    owned.write_text("mine\n")
    os.chown(owned, 1000, 100)
    (rootfs / "etc" / "link").symlink_to("/usr/bin/suid")
    return rootfs


def getcap(path: Path) -> str:
    """Return getcap's capability text for `path` ('' when none)."""
    out = subprocess.run(["getcap", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip().rpartition(" ")[2] if out.stdout.strip() else ""


@pytest.mark.integration
def test_setup_sandbox_builds_a_base_from_a_rootfs(tmp_path: Path, special_rootfs: Path) -> None:
    """A real run writes wrappers, mount points, the offline config and a truthful manifest."""
    base = tmp_path / "base"
    result = run_script(
        "--base", base, "--from-rootfs", special_rootfs, "--no-keyring",
        "--uid-base", str(SMALL_UID_BASE),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "base.new").exists()
    for point in ("build/profile", "build/work", "build/output", "srv/isorunner/repo"):
        assert (base / point).is_dir()
    assert list((base / "srv" / "isorunner" / "repo").iterdir()) == []
    for wrapper in ("mount", "umount", "pacman", "mkfs.fat", "xorriso"):
        assert os.access(base / "usr" / "local" / "sbin" / wrapper, os.X_OK)
    conf = (base / "etc" / "isorunner" / "pacman.conf").read_text()
    assert "[isorunner]\nServer = file:///srv/isorunner/repo" in conf
    assert "CacheDir = /build/work/pacman-cache/" in conf
    assert "[local]" not in conf
    manifest = json.loads((base / "etc" / "isorunner" / "manifest.json").read_text())
    assert manifest["source"] == "rootfs"
    assert manifest["uid_base"] == SMALL_UID_BASE
    assert manifest["uid_count"] == 65536
    assert manifest["archive_date"] is None
    assert set(manifest) == {
        "created", "source", "uid_base", "uid_count", "archive_date", "packages", "mkarchiso",
    }  # fmt: skip
    time.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert manifest["packages"] == {}
    assert manifest["mkarchiso"] is None


@pytest.mark.integration
def test_setup_sandbox_manifest_names_the_mkarchiso_of_the_base(
    tmp_path: Path, rootfs: Path
) -> None:
    """The manifest records mkarchiso's path, sha256, archiso's version and the base's packages."""
    require_setup_tools()
    script = rootfs / "usr" / "bin" / "mkarchiso"
    script.write_text("#!/bin/bash\n# mkarchiso\n")
    desc = rootfs / "var" / "lib" / "pacman" / "local" / "archiso-88-1" / "desc"
    desc.parent.mkdir(parents=True)
    desc.write_text("%NAME%\narchiso\n\n%VERSION%\n88-1\n\n")
    base = tmp_path / "base"
    result = run_script(
        "--base", base, "--from-rootfs", rootfs, "--no-keyring",
        "--uid-base", str(SMALL_UID_BASE),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((base / "etc" / "isorunner" / "manifest.json").read_text())
    assert manifest["packages"] == {"archiso": "88-1"}
    assert manifest["mkarchiso"] == {
        "path": "/usr/bin/mkarchiso",
        "sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
        "version": "88-1",
    }


@pytest.mark.integration
def test_setup_sandbox_shift_keeps_setuid_and_capabilities(
    tmp_path: Path, special_rootfs: Path
) -> None:
    """Every owner moves by uid_base while setuid bits and file capabilities survive."""
    base = tmp_path / "base"
    result = run_script(
        "--base", base, "--from-rootfs", special_rootfs, "--no-keyring",
        "--uid-base", str(SMALL_UID_BASE),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path in (base, base / "usr" / "bin" / "suid", base / "srv" / "isorunner" / "repo"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (SMALL_UID_BASE, SMALL_UID_BASE), path
    owned = (base / "etc" / "owned").lstat()
    assert (owned.st_uid, owned.st_gid) == (SMALL_UID_BASE + 1000, SMALL_UID_BASE + 100)
    assert (base / "etc" / "link").lstat().st_uid == SMALL_UID_BASE
    assert stat.S_IMODE((base / "usr" / "bin" / "suid").stat().st_mode) == 0o4755
    assert getcap(base / "usr" / "bin" / "capped") == "cap_net_raw=ep"
    # The source tree is copied, never shifted in place.
    assert (special_rootfs / "etc" / "owned").lstat().st_uid == 1000


@pytest.mark.integration
def test_setup_sandbox_second_run_changes_nothing(tmp_path: Path, special_rootfs: Path) -> None:
    """A second run on a finished base reports it and leaves every file as it was."""
    base = tmp_path / "base"
    args = ("--base", base, "--from-rootfs", special_rootfs, "--no-keyring")
    assert run_script(*args).returncode == 0

    def snapshot() -> dict[str, tuple[int, int, int, int]]:
        return {
            str(p.relative_to(base)): (st.st_mode, st.st_uid, st.st_mtime_ns, st.st_size)
            for p in [base, *base.rglob("*")]
            for st in [p.lstat()]
        }

    before = snapshot()
    second = run_script(*args)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert snapshot() == before


@pytest.mark.integration
def test_setup_sandbox_refuses_a_tree_of_another_range(tmp_path: Path, rootfs: Path) -> None:
    """A rootfs with owners beyond 65535 is refused and no base is published."""
    require_setup_tools()
    stray = rootfs / "etc" / "stray"
    stray.write_text("x\n")
    os.chown(stray, 70000, 70000)
    result = run_script("--base", tmp_path / "base", "--from-rootfs", rootfs, "--no-keyring")
    assert result.returncode == 1
    assert "outside 0..65535" in result.stderr
    assert not (tmp_path / "base").exists()


@pytest.mark.integration
def test_setup_sandbox_sets_up_the_host_keyring(tmp_path: Path) -> None:
    """On a finished base the host keyring is made with pacman-key from archlinux-keyring."""
    require_root()
    require_tool("pacman-key")
    require(
        Path("/usr/share/keyrings/archlinux.gpg").is_file()
        or Path("/usr/share/pacman/keyrings/archlinux.gpg").is_file(),
        "archlinux-keyring (scripts/install installs it)",
    )
    write_manifest(tmp_path / "base", UID_BASE)
    keyring = tmp_path / "keyring"
    result = run_script("--base", tmp_path / "base", "--keyring-dir", keyring)
    assert result.returncode == 0, result.stderr
    assert f"setting up the package keyring {keyring}" in result.stdout
    listed = subprocess.run(
        ["gpg", "--homedir", str(keyring), "--batch", "--with-colons", "--list-keys"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # pacman-key --populate lsigns the Arch master keys: they are valid ("f") in the keyring.
    assert any(
        line.startswith("uid:f:") and "@archlinux.org" in line for line in listed.splitlines()
    )
    assert not list(keyring.glob("S.*")), "the gpg-agent was left running"


@pytest.mark.integration
def test_setup_sandbox_prewarms_the_cache_from_a_mirror(tmp_path: Path) -> None:
    """--packages downloads the list and its dependencies, checked, into <cache>/incoming."""
    require_root()
    require_tool("pacman")
    upstream = STANDIN_DIR / "upstream"
    require((upstream / "stamp").is_file(), f"the test upstream in {upstream}")
    write_manifest(tmp_path / "base", UID_BASE)
    packages = tmp_path / "packages.x86_64"
    packages.write_text("isorunner-hello  # and its dependency\n")
    with serve_upstream(upstream / "www") as server:
        result = run_script(
            "--base", tmp_path / "base", "--keyring-dir", upstream / "keyring",
            "--packages", packages, "--cache-dir", tmp_path / "cache",
            "--mirror", f"{server.url}/mirror",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    incoming = sorted(p.name for p in (tmp_path / "cache" / "incoming").iterdir())
    assert incoming == [
        "isorunner-hello-1.0-1-any.pkg.tar.zst",
        "isorunner-hello-1.0-1-any.pkg.tar.zst.sig",
        "isorunner-libhello-1.0-1-any.pkg.tar.zst",
        "isorunner-libhello-1.0-1-any.pkg.tar.zst.sig",
    ]


@pytest.mark.integration
def test_build_standin_second_run_is_a_no_op() -> None:
    """With a matching stamp, build-standin.sh prints one line and touches nothing."""
    require_root()
    standin = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
    require((standin / "stamp").is_file(), f"the stand-in built at {standin} (scripts/install)")
    first = subprocess.run(
        [str(BUILD_STANDIN)], check=False, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stderr
    base_mtime = (standin / "base").stat().st_mtime_ns
    stamp = (standin / "stamp").read_text()

    second = subprocess.run(
        [str(BUILD_STANDIN)], check=False, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("\n") == 1
    assert "up to date" in second.stdout
    assert second.stderr == ""
    assert (standin / "base").stat().st_mtime_ns == base_mtime
    assert (standin / "stamp").read_text() == stamp


def test_standin_sources_are_executable_scripts() -> None:
    """The stand-in's builder and mkarchiso are executable bash scripts with strict mode."""
    for script in (BUILD_STANDIN, REPO_ROOT / "tests" / "standin" / "mkarchiso", SCRIPT):
        assert os.access(script, os.X_OK), script
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text or "set -e -u" in text


# --- the stand-in mkarchiso ----------------------------------------------------------

STANDIN_MKARCHISO = REPO_ROOT / "tests" / "standin" / "mkarchiso"
STANDIN_DIR = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
EPOCH = 1700000000


def test_standin_mkarchiso_refuses_non_root(tmp_path: Path) -> None:
    """Like the real one, the stand-in mkarchiso refuses to run unless EUID is 0."""
    argv = [str(STANDIN_MKARCHISO), "-w", str(tmp_path / "w"), str(tmp_path)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 1
    assert result.stderr == "[mkarchiso] ERROR: mkarchiso must be run as root.\n"
    assert not (tmp_path / "w").exists()


def test_standin_mkarchiso_help_lists_real_options() -> None:
    """-h prints the real mkarchiso's usage line and options, and exits 0."""
    result = subprocess.run(
        [str(STANDIN_MKARCHISO), "-h"], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: mkarchiso [options] <profile_dir>\n")
    for option in (
        "-A",
        "-C",
        "-D",
        "-L",
        "-P",
        "-c",
        "-g",
        "-G",
        "-m",
        "-o",
        "-p",
        "-r",
        "-v",
        "-w",
    ):
        assert f"     {option} " in result.stdout


def run_standin_build(
    tmp_path: Path,
    *extra: str,
    binds: tuple[str, ...] = (),
    base: Path = STANDIN_DIR / "base",
    uid_base: int = UID_BASE,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the base's mkarchiso on the minimal profile in an overlay container.

    The stand-in's packages are bound as the build's repository, as the sandbox does.
    """
    require_root()
    require_tool("systemd-nspawn")
    require((STANDIN_DIR / "stamp").is_file(), f"the stand-in built at {STANDIN_DIR}")
    dirs = {name: tmp_path / name for name in ("upper", "ovl", "root", "work", "out")}
    for path in dirs.values():
        path.mkdir(parents=True)
    for name in ("work", "out"):
        os.chown(dirs[name], uid_base, uid_base)
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base},upperdir={dirs['upper']},workdir={dirs['ovl']}",
         str(dirs["root"])],
        check=True,
    )  # fmt: skip
    try:
        result = subprocess.run(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
             f"--private-users={uid_base}:65536", "--private-users-ownership=off",
             "-D", str(dirs["root"]), "--read-only", "--private-network", "--tmpfs=/tmp",
             f"--setenv=SOURCE_DATE_EPOCH={EPOCH}",
             f"--bind-ro={STANDIN_DIR / 'profiles' / 'minimal'}:/build/profile:idmap",
             f"--bind={dirs['work']}:/build/work", f"--bind={dirs['out']}:/build/output",
             f"--bind-ro={STANDIN_DIR / 'repo'}:/srv/isorunner/repo:idmap",
             *binds,
             "mkarchiso", "-v", "-r", *extra, "-w", "/build/work/w", "-o", "/build/output",
             "-C", "/etc/isorunner/pacman.conf", "/build/profile"],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(dirs["root"])], check=True)
    return result, dirs["out"]


@pytest.mark.integration
def test_standin_build_keeps_owners_setuid_capabilities_and_date(tmp_path: Path) -> None:
    """The ISO's squashfs keeps setuid, file capability, system-user owner, links; dates = SDE."""
    result, out = run_standin_build(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[mkarchiso] INFO: Done! Packages installed successfully." in result.stdout
    iso = out / "isorunner-minimal-1.0-x86_64.iso"
    assert [p.name for p in out.iterdir()] == [iso.name]
    assert not (tmp_path / "work" / "w").exists()
    pvd = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=True
    ).stdout
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(EPOCH))
    assert f"Creation Time: {stamp}00" in pvd
    assert f"Modif. Time  : {stamp}00" in pvd
    sfs = tmp_path / "airootfs.sfs"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso),
         "-extract", "/arch/x86_64/airootfs.sfs", str(sfs)],
        capture_output=True, check=True,
    )  # fmt: skip
    tree = tmp_path / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), str(sfs)], capture_output=True, check=True)
    assert stat.S_IMODE((tree / "usr/bin/isorunner-suid").stat().st_mode) == 0o4755
    assert (tree / "usr/bin/isorunner-suid").stat().st_uid == 0
    assert getcap(tree / "usr/bin/isorunner-fcap") == "cap_net_raw=ep"
    svc = (tree / "var/lib/isorunner-svc").stat()
    assert (svc.st_uid, svc.st_gid) == (970, 970)
    assert os.readlink(tree / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert stat.S_IMODE((tree / "etc/shadow").stat().st_mode) == 0o400
    assert (tree / "usr/share/isorunner/scriptlet-ran").read_text() == (
        "isorunner-base 1.0-1 installed\n"
    )


@pytest.mark.integration
def test_standin_build_names_a_missing_package(tmp_path: Path) -> None:
    """A package the mirror lacks fails the build with pacman's own message."""
    result, out = run_standin_build(tmp_path, "-p", "no-such-package")
    assert result.returncode != 0
    assert "error: target not found: no-such-package" in result.stdout + result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.integration
def test_standin_build_fails_without_the_mount_wrapper(tmp_path: Path) -> None:
    """Without the wrapper, real pacstrap's devtmpfs mount is refused in the user namespace."""
    real = STANDIN_DIR / "base" / "usr" / "bin"
    result, out = run_standin_build(
        tmp_path,
        binds=(
            f"--bind-ro={real / 'mount'}:/usr/local/sbin/mount",
            f"--bind-ro={real / 'umount'}:/usr/local/sbin/umount",
        ),
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mount: /build/work/w/x86_64/airootfs/dev: permission denied" in output, output
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("date_args", "url"),
    [
        ([], "https://geo.mirror.pkgbuild.com/iso/latest/archlinux-bootstrap-x86_64.tar.zst"),
        (
            ["--archive-date", "2024/03/15"],
            "https://archive.archlinux.org/iso/2024.03.01/archlinux-bootstrap-2024.03.01-x86_64.tar.zst",
        ),
    ],
)
def test_setup_sandbox_plan_names_the_bootstrap_tarball(
    tmp_path: Path, date_args: list[str], url: str
) -> None:
    """Off Arch the plan names the tarball (that month's release when pinned) and its key."""
    packages = tmp_path / "packages.x86_64"
    packages.write_text("base\n")
    result = run_script(
        "--base", tmp_path / "base", "--packages", packages, *date_args, "--dry-run",
        "--keyring-dir", tmp_path / "keyring",
        env={"ISORUNNER_SETUP_HOST": "other"},
    )  # fmt: skip
    assert plan_of(result)[0] == "step_bootstrap"
    assert f"  from: {url} (signed by 3E80CA1A8B89F69CBA57D98A76A5EF9054449A5C)" in result.stdout
