"""Tests of the base's reproducibility wrappers (pacman, mkfs.fat, xorriso) on their own.

Each wrapper is written by `setup-sandbox.sh --wrappers-only` and run twice against the
real tool, a few seconds apart, with the same SOURCE_DATE_EPOCH: the outputs are equal
through the wrapper and differ without it (the leak it removes is real on this host).
Fake real tools (`ISORUNNER_REAL_<TOOL>`) pin down the argument handling. Whole builds
with a wrapper taken away are in tests/runner/publish/test_reproducible_builds.py. This
module does I/O (subprocesses, temporary trees).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool
from tests.sandbox.test_setup_sandbox import run_script

EPOCH = 1700000000


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wrappers written by --wrappers-only, in <tmp>/usr/local/sbin."""
    top = tmp_path_factory.mktemp("wrappers")
    result = run_script("--wrappers-only", top)
    assert result.returncode == 0, result.stderr
    return top / "usr" / "local" / "sbin"


def run(argv: list[str | Path], *, env: dict[str, str], cwd: Path) -> str:
    """Run `argv` with exactly `env` (plus PATH); fail with its output if it fails."""
    full_env = {"PATH": os.environ["PATH"], "LC_ALL": "C", **env}
    result = subprocess.run(
        [str(a) for a in argv], env=full_env, cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def next_second() -> None:
    """Sleep into a later wall-clock second than the current one (by at least one)."""
    time.sleep(1.0 + (1.0 - time.time() % 1.0))


@pytest.fixture
def fake_tool(tmp_path: Path) -> tuple[Path, Path]:
    """A fake real tool that records its arguments one a line and succeeds."""
    log = tmp_path / "args.log"
    tool = tmp_path / "fake-tool"
    tool.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >"$FAKE_LOG"\n')
    tool.chmod(0o755)
    return tool, log


# --- mkfs.fat (leak 2) --------------------------------------------------------------------


def make_fat(tool: Path, image: Path, *, env: dict[str, str]) -> bytes:
    """Make a 2 MiB FAT image as mkarchiso does and return its bytes."""
    run([tool, "-C", "-n", "ARCHISO_EFI", image, "2048"], env=env, cwd=image.parent)
    data = image.read_bytes()
    image.unlink()
    return data


def test_mkfs_fat_wrapper_makes_the_same_image_twice(wrappers: Path, tmp_path: Path) -> None:
    """Through the wrapper two FAT images made seconds apart are equal; without it they differ."""
    real = require_tool("mkfs.fat")
    env = {"SOURCE_DATE_EPOCH": str(EPOCH), "ISORUNNER_REAL_MKFS_FAT": real}
    image = tmp_path / "efiboot.img"
    first = make_fat(wrappers / "mkfs.fat", image, env=env)
    plain_first = make_fat(Path(real), image, env={})
    next_second()
    assert make_fat(wrappers / "mkfs.fat", image, env=env) == first
    assert make_fat(Path(real), image, env={}) != plain_first


def test_mkfs_fat_wrapper_derives_the_serial_from_the_epoch(wrappers: Path, tmp_path: Path) -> None:
    """The volume serial is SOURCE_DATE_EPOCH modulo 2^32, in hex, as minfo reads it."""
    real = require_tool("mkfs.fat")
    minfo = require_tool("minfo")
    image = tmp_path / "efiboot.img"
    run([wrappers / "mkfs.fat", "-C", image, "2048"],
        env={"SOURCE_DATE_EPOCH": str(2**32 + 0x1234), "ISORUNNER_REAL_MKFS_FAT": real},
        cwd=tmp_path)  # fmt: skip
    assert "serial number: 00001234" in run([minfo, "-i", image, "::"], env={}, cwd=tmp_path)


@pytest.mark.parametrize("epoch", [None, "", "soon", "-5"])
def test_mkfs_fat_wrapper_passes_through_without_a_numeric_epoch(
    wrappers: Path, fake_tool: tuple[Path, Path], tmp_path: Path, epoch: str | None
) -> None:
    """Without a numeric SOURCE_DATE_EPOCH the real tool gets the arguments unchanged."""
    tool, log = fake_tool
    env = {"ISORUNNER_REAL_MKFS_FAT": str(tool), "FAKE_LOG": str(log)}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    run([wrappers / "mkfs.fat", "-C", "-n", "X", "img", "2048"], env=env, cwd=tmp_path)
    assert log.read_text().splitlines() == ["-C", "-n", "X", "img", "2048"]


def test_mkfs_fat_wrapper_puts_its_options_before_the_callers(
    wrappers: Path, fake_tool: tuple[Path, Path], tmp_path: Path
) -> None:
    """--invariant and -i come first, so a caller's own -i (parsed later) still wins."""
    tool, log = fake_tool
    env = {"SOURCE_DATE_EPOCH": "255", "ISORUNNER_REAL_MKFS_FAT": str(tool), "FAKE_LOG": str(log)}
    run([wrappers / "mkfs.fat", "-i", "CAFE", "img"], env=env, cwd=tmp_path)
    assert log.read_text().splitlines() == ["--invariant", "-i", "000000FF", "-i", "CAFE", "img"]


# --- xorriso (leak 3) ---------------------------------------------------------------------


def make_iso(tool: Path, tree: Path, iso: Path, *, env: dict[str, str]) -> bytes:
    """Write a file into `tree` now (a fresh mtime), make an ISO of it, return its bytes."""
    (tree / "version").write_text("1.0\n")
    run([tool, "-no_rc", "-report_about", "SORRY", "-as", "mkisofs", "-rational-rock",
         "-volid", "TEST", "-output", iso, tree], env=env, cwd=tree.parent)  # fmt: skip
    data = iso.read_bytes()
    iso.unlink()
    return data


def test_xorriso_wrapper_makes_the_same_iso_twice(wrappers: Path, tmp_path: Path) -> None:
    """Through the wrapper, ISOs of a file rewritten seconds apart are equal; without it not."""
    real = require_tool("xorriso")
    env = {"SOURCE_DATE_EPOCH": str(EPOCH), "ISORUNNER_REAL_XORRISO": real}
    tree = tmp_path / "tree"
    tree.mkdir()
    iso = tmp_path / "out.iso"
    first = make_iso(wrappers / "xorriso", tree, iso, env=env)
    plain_first = make_iso(Path(real), tree, iso, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    next_second()
    assert make_iso(wrappers / "xorriso", tree, iso, env=env) == first
    assert make_iso(Path(real), tree, iso, env={"SOURCE_DATE_EPOCH": str(EPOCH)}) != plain_first


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["-no_rc", "-as", "mkisofs", "-o", "x.iso", "dir"],
            ["-no_rc", "-as", "mkisofs", "--set_all_file_dates", "=77", "-o", "x.iso", "dir"],
        ),
        (["-indev", "x.iso", "-pvd_info"], ["-indev", "x.iso", "-pvd_info"]),
        (["-as", "cdrecord", "x"], ["-as", "cdrecord", "x"]),
        (
            ["a b", "-as", "genisoimage"],
            ["a b", "-as", "genisoimage", "--set_all_file_dates", "=77"],
        ),
    ],
)
def test_xorriso_wrapper_adds_file_dates_only_in_mkisofs_emulation(
    wrappers: Path,
    fake_tool: tuple[Path, Path],
    tmp_path: Path,
    args: list[str],
    expected: list[str],
) -> None:
    """--set_all_file_dates =EPOCH follows `-as mkisofs`; other calls pass unchanged."""
    tool, log = fake_tool
    env = {"SOURCE_DATE_EPOCH": "77", "ISORUNNER_REAL_XORRISO": str(tool), "FAKE_LOG": str(log)}
    run([wrappers / "xorriso", *args], env=env, cwd=tmp_path)
    assert log.read_text().splitlines() == expected


# --- pacman (leak 1) ----------------------------------------------------------------------


def make_package(directory: Path, name: str, version: str) -> Path:
    """Write a minimal pacman package (a .PKGINFO and one file) and return its path."""
    path = directory / f"{name}-{version}-any.pkg.tar.gz"
    pkginfo = f"pkgname = {name}\npkgbase = {name}\npkgver = {version}\narch = any\nsize = 3\n"
    with tarfile.open(path, "w:gz") as archive:
        for member_name, data in ((".PKGINFO", pkginfo.encode()), (f"usr/share/{name}", b"hi\n")):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mtime = 1700000000
            archive.addfile(info, io.BytesIO(data))
    return path


def pacman_install(tool: Path, package: Path, root: Path, *, env: dict[str, str]) -> str:
    """Install `package` into a fresh `root` with pacman -U; return its local `desc` text."""
    (root / "var" / "lib" / "pacman").mkdir(parents=True)
    conf = root.parent / f"{root.name}.conf"
    conf.write_text("[options]\nArchitecture = auto\nSigLevel = Never\n")
    run([tool, "--config", conf, "-r", root, "-U", "--noconfirm", "--noscriptlet", package],
        env=env, cwd=root.parent)  # fmt: skip
    (desc,) = (root / "var" / "lib" / "pacman" / "local").glob("*/desc")
    return desc.read_text()


@pytest.mark.integration
def test_pacman_wrapper_makes_the_same_database_twice(wrappers: Path, tmp_path: Path) -> None:
    """Installs seconds apart record the same %INSTALLDATE% through the wrapper, not without."""
    require_root()
    real = require_tool("pacman")
    require_tool("pacman-conf")
    package = make_package(tmp_path, "alpha", "1.0-1")
    env = {"SOURCE_DATE_EPOCH": str(EPOCH), "ISORUNNER_REAL_PACMAN": real}
    first = pacman_install(wrappers / "pacman", package, tmp_path / "r1", env=env)
    plain_first = pacman_install(Path(real), package, tmp_path / "p1", env=env)
    next_second()
    assert pacman_install(wrappers / "pacman", package, tmp_path / "r2", env=env) == first
    assert f"%INSTALLDATE%\n{EPOCH}\n" in first
    assert pacman_install(Path(real), package, tmp_path / "p2", env=env) != plain_first


def fake_pacman(tmp_path: Path, date: int) -> Path:
    """A fake real pacman that writes one local `desc` under the given -r root."""
    tool = tmp_path / "fake-pacman"
    tool.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -r ] && root="$2"; shift; done\n'
        'mkdir -p "$root/var/lib/pacman/local/x-1-1"\n'
        "printf '%s\\n' %NAME% x %INSTALLDATE% @WHEN@ %SIZE% 3 ".replace("@WHEN@", str(date))
        + '>"$root/var/lib/pacman/local/x-1-1/desc"\n'
    )
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize(
    ("args", "date", "expected"),
    [
        (["-Sy", "x"], 1800000000, "1700000000"),
        (["--upgrade", "x.pkg"], 1800000000, "1700000000"),
        (["-U", "x.pkg"], 1600000000, "1600000000"),  # earlier than the epoch: kept
        (["-Qi", "x"], 1800000000, "1800000000"),  # a query installs nothing
    ],
)
def test_pacman_wrapper_clamps_install_dates_after_installs(
    wrappers: Path, tmp_path: Path, args: list[str], date: int, expected: str
) -> None:
    """After -S/-U the dates later than SOURCE_DATE_EPOCH become it; earlier ones stay."""
    require_tool("pacman-conf")
    root = tmp_path / "root"
    env = {
        "SOURCE_DATE_EPOCH": str(EPOCH),
        "ISORUNNER_REAL_PACMAN": str(fake_pacman(tmp_path, date)),
    }
    run([wrappers / "pacman", "-r", root, *args], env=env, cwd=tmp_path)
    desc = (root / "var/lib/pacman/local/x-1-1/desc").read_text().splitlines()
    assert desc == ["%NAME%", "x", "%INSTALLDATE%", expected, "%SIZE%", "3"]


def test_pacman_wrapper_keeps_the_real_exit_status(wrappers: Path, tmp_path: Path) -> None:
    """A failing pacman's status comes back unchanged and no database is touched."""
    tool = tmp_path / "failing-pacman"
    tool.write_text("#!/bin/sh\nexit 7\n")
    tool.chmod(0o755)
    env = {"SOURCE_DATE_EPOCH": str(EPOCH), "ISORUNNER_REAL_PACMAN": str(tool)}
    result = subprocess.run(
        [str(wrappers / "pacman"), "-S", "x"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        check=False,
    )
    assert result.returncode == 7
