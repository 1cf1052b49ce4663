"""Integration tests of BootTester: real QEMU (TCG) in real sandbox containers.

The ISOs are built once per module by the real sandbox from the stand-in's boot profile
and variants of it whose boot loader entries add the stand-in's test switches
(tests/standin/CONTRACT.md): a kernel panic, a hang, a network probe, a missing
kernel, no serial console.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.boot import BootResult, BootSpec, BootTester
from sandbox.config import SandboxConfig
from sandbox.exceptions import Cancelled
from sandbox.sandbox import BuildSandbox
from tests.conftest import require, require_root, require_tool
from tests.pngimage import decode

pytestmark = pytest.mark.integration

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
EPOCH = 1700000000
SYSLINUX_ENTRY = "syslinux/archiso_sys-linux.cfg"
UEFI_ENTRY = "efiboot/loader/entries/01-archiso-linux.conf"
SERIAL = "console=ttyS0,115200"
#: Variant name -> (file to edit, old text, new text) for both boot loaders.
VARIANTS = {
    "good": ("", ""),
    "panic": (SERIAL, f"{SERIAL} isorunner.test=panic"),
    "hang": (SERIAL, f"{SERIAL} isorunner.test=hang"),
    "network": (SERIAL, f"{SERIAL} isorunner.test=network"),
    "broken": ("vmlinuz-linux", "vmlinuz-missing"),
    "noserial": (f" {SERIAL}", ""),
}


def _config(root: Path) -> SandboxConfig:
    return SandboxConfig(
        # Unique per run (like the root): runs side by side never see each other's cgroups.
        machine_prefix="bt" + hashlib.sha256(str(root).encode()).hexdigest()[:10],
        base_dir=STANDIN / "base",
        sandbox_root=root,
        memory_limit=2 << 30,
        cpus=2.0,
        pids_limit=1024,
        timeout_seconds=300.0,
        warning_seconds=300.0,
        min_free_bytes=1 << 30,
    )


async def _build(config: SandboxConfig, profile: Path, name: str, out: Path) -> Path:
    async def sink(_line: str) -> None:
        return None

    sandbox = BuildSandbox(config)
    result = await sandbox.run(
        f"bt-{name}",
        profile,
        source_date_epoch=EPOCH,
        log_sink=sink,
        package_repo=STANDIN / "repo",  # the stand-in packages, as package sync lays them out
    )
    (iso,) = result.isos
    target = out / f"{name}.iso"
    shutil.copyfile(iso, target)
    await sandbox.discard(f"bt-{name}")
    return target


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A sandbox_root on disk for the module, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="isorunner-boot-it-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def isos(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The boot profile's ISO and its variants, built by the real sandbox."""
    require_root()
    require_tool("systemd-nspawn")
    require(
        (STANDIN / "profiles" / "boot" / "profiledef.sh").is_file(),
        f"the stand-in boot profile in {STANDIN} (run tests/standin/build-standin.sh)",
    )
    work = tmp_path_factory.mktemp("boot-isos")
    built: dict[str, Path] = {}
    for name, (old, new) in VARIANTS.items():
        profile = work / f"profile-{name}"
        shutil.copytree(STANDIN / "profiles" / "boot", profile, symlinks=True)
        for entry in (SYSLINUX_ENTRY, UEFI_ENTRY):
            path = profile / entry
            path.write_text(path.read_text().replace(old, new) if old else path.read_text())
        built[name] = asyncio.run(_build(_config(root), profile, name, work))
    return built


class Log:
    """Collects the lines a boot test logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _assert_nothing_left(root: Path) -> None:
    builds = root / "builds"
    assert not builds.exists() or not any(builds.iterdir())
    assert str(root) not in Path("/proc/self/mountinfo").read_text()
    own = Path("/proc/self/cgroup").read_text()
    for line in own.splitlines():
        _hid, controllers, path = line.split(":", 2)
        if controllers in ("memory", "pids"):
            mine = Path(
                "/sys/fs/cgroup", controllers, path.lstrip("/"), _config(root).machine_prefix
            )
            assert not mine.is_dir() or not [p for p in mine.iterdir() if p.is_dir()], mine


def _not_blank(result: BootResult) -> None:
    assert result.screenshot is not None
    image = decode(result.screenshot)
    assert image.width >= 640
    assert image.height >= 400
    assert image.colours() >= 2, "the screenshot is blank"


async def _boot(root: Path, iso: Path, spec: BootSpec, log: Log | None = None) -> BootResult:
    tester = BootTester(_config(root))
    return await tester.boot("bt-vm", iso, spec, log_sink=log or Log())


@pytest.mark.anyio
async def test_boot_passes_on_bios_with_a_screenshot(root: Path, isos: dict[str, Path]) -> None:
    """SeaBIOS boots the ISO from CD-ROM to 'archiso login:'; the screen is a real PNG."""
    log = Log()
    result = await _boot(root, isos["good"], BootSpec(firmware="bios", timeout_seconds=240), log)
    assert result.outcome == "passed", (result.reason, result.serial_tail)
    assert "archiso login:" in result.reason
    assert result.serial_tail[-1] == "archiso login:"
    assert "ISOLINUX" in log.text
    assert "boot test (bios): TCG, because" in log.text or "KVM, because" in log.text
    _not_blank(result)
    _assert_nothing_left(root)


@pytest.mark.anyio
async def test_boot_passes_on_uefi_through_systemd_boot(root: Path, isos: dict[str, Path]) -> None:
    """OVMF boots the ISO's EFI system partition (systemd-boot) to the login prompt."""
    log = Log()
    result = await _boot(root, isos["good"], BootSpec(firmware="uefi", timeout_seconds=240), log)
    assert result.outcome == "passed", (result.reason, result.serial_tail)
    assert "BdsDxe: starting" in log.text
    _not_blank(result)
    _assert_nothing_left(root)


@pytest.mark.anyio
async def test_boot_passes_from_a_usb_disk(root: Path, isos: dict[str, Path]) -> None:
    """The hybrid ISO also boots as a USB disk (isohybrid MBR, then the initramfs finds it)."""
    spec = BootSpec(firmware="bios", medium="usb", timeout_seconds=240)
    result = await _boot(root, isos["good"], spec)
    assert result.outcome == "passed", (result.reason, result.serial_tail)


@pytest.mark.anyio
async def test_boot_reports_a_kernel_panic_with_its_lines(
    root: Path, isos: dict[str, Path]
) -> None:
    """An init that exits fails the test at once, with the panic's lines in the tail."""
    result = await _boot(root, isos["panic"], BootSpec(firmware="bios", timeout_seconds=240))
    assert result.outcome == "failed"
    assert "Kernel panic - not syncing" in result.reason
    tail = "\n".join(result.serial_tail)
    assert ":: isorunner.test=panic: init exits" in tail
    assert "Attempted to kill init!" in tail
    assert "end Kernel panic" in tail  # the lines after the first one were read too
    _not_blank(result)


@pytest.mark.anyio
async def test_boot_times_out_on_an_init_that_hangs(root: Path, isos: dict[str, Path]) -> None:
    """An init that never shows a prompt ends as timed out, after the timeout."""
    spec = BootSpec(firmware="bios", mode="kernel", timeout_seconds=60)
    result = await _boot(root, isos["hang"], spec)
    assert result.outcome == "timed_out"
    assert result.seconds >= 60
    assert ":: isorunner.test=hang: waiting forever" in result.serial_tail
    assert "within 60 s" in result.reason
    _assert_nothing_left(root)


@pytest.mark.anyio
async def test_boot_fails_a_broken_boot_loader_entry_on_bios(
    root: Path, isos: dict[str, Path]
) -> None:
    """SYSLINUX cannot load the entry's kernel: failed, with its message."""
    result = await _boot(root, isos["broken"], BootSpec(firmware="bios", timeout_seconds=240))
    assert result.outcome == "failed"
    assert "vmlinuz-missing... failed" in result.reason
    _not_blank(result)


@pytest.mark.anyio
async def test_boot_fails_a_broken_boot_loader_entry_on_uefi(
    root: Path, isos: dict[str, Path]
) -> None:
    """systemd-boot skips the entry and resets: the reset ends the test as failed."""
    result = await _boot(root, isos["broken"], BootSpec(firmware="uefi", timeout_seconds=240))
    assert result.outcome == "failed"
    assert "the guest reset the machine" in result.reason
    assert result.screenshot is not None


@pytest.mark.anyio
async def test_boot_guest_finds_no_network(root: Path, isos: dict[str, Path]) -> None:
    """By default the guest has no network device and its ping finds no network."""
    spec = BootSpec(firmware="bios", mode="kernel", timeout_seconds=240)
    result = await _boot(root, isos["network"], spec)
    assert result.outcome == "passed", (result.reason, result.serial_tail)
    assert "isorunner-net: interfaces: lo" in result.serial_tail
    assert any(line.startswith("isorunner-net: unreachable") for line in result.serial_tail)


@pytest.mark.anyio
async def test_boot_network_gives_the_guest_user_mode_networking(
    root: Path, isos: dict[str, Path]
) -> None:
    """With network, the guest gets an address by DHCP and reaches the slirp gateway."""
    spec = BootSpec(firmware="bios", mode="kernel", network=True, timeout_seconds=240)
    result = await _boot(root, isos["network"], spec)
    assert result.outcome == "passed", (result.reason, result.serial_tail)
    assert "isorunner-net: eth0 got an address by DHCP" in result.serial_tail
    assert "isorunner-net: reachable" in result.serial_tail


@pytest.mark.anyio
async def test_boot_without_serial_console_says_so_and_kernel_mode_sees_the_boot(
    root: Path, isos: dict[str, Path]
) -> None:
    """No console=ttyS0: firmware mode times out naming the entry; kernel mode passes."""
    firmware = await _boot(root, isos["noserial"], BootSpec(firmware="bios", timeout_seconds=45))
    assert firmware.outcome == "timed_out"
    assert firmware.serial_console is False
    assert "/boot/syslinux/archiso_sys-linux.cfg" in firmware.reason
    assert "no console=ttyS0" in firmware.reason
    kernel = await _boot(
        root, isos["noserial"], BootSpec(firmware="bios", mode="kernel", timeout_seconds=240)
    )
    assert kernel.outcome == "passed", (kernel.reason, kernel.serial_tail)
    assert kernel.command_line == (
        "archisobasedir=arch archisolabel=ISORUNNER_BOOT console=tty0 console=ttyS0,115200"
    )
    _assert_nothing_left(root)


@pytest.mark.anyio
async def test_kvm_probe_falls_back_to_tcg_when_kvm_does_not_work(root: Path) -> None:
    """A device that is not KVM fails the probe, so TCG is used, and the reason says why."""
    require_root()
    tester = BootTester(_config(root), kvm_device=Path("/dev/null"))
    accelerator, why = await tester.accelerator()
    assert accelerator == "tcg"
    assert why.startswith("because KVM does not work here: qemu-system-x86_64:")
    works, what = await tester.probe("tcg")
    assert works, what  # the probe guest itself runs: the fallback is not vacuous
    missing = BootTester(_config(root), kvm_device=root / "no-kvm")
    assert await missing.accelerator() == (
        "tcg",
        f"because KVM does not work here: {root}/no-kvm does not exist",
    )
    _assert_nothing_left(root)


@pytest.mark.anyio
async def test_boot_runs_qemu_unprivileged_and_cancel_leaves_nothing(
    root: Path, isos: dict[str, Path]
) -> None:
    """While a guest boots, QEMU runs as the container's nobody; cancel stops everything."""
    config = _config(root)
    tester = BootTester(config)
    log = Log()
    task = asyncio.ensure_future(
        tester.boot("bt-cancel", isos["hang"], BootSpec(firmware="bios"), log_sink=log)
    )
    while not any(line.startswith("console:") for line in log.lines):
        assert not task.done()
        await asyncio.sleep(0.1)
    uids = _qemu_uids(config)
    assert uids == {config.uid_base + 65534}, uids
    assert await tester.cancel("bt-cancel")
    with pytest.raises(Cancelled):
        await task
    assert not _qemu_uids(config)
    _assert_nothing_left(root)


def _qemu_uids(config: SandboxConfig) -> set[int]:
    """Real UIDs of the qemu-system-x86_64 processes in this run's containers.

    Only those in a cgroup under `config.machine_prefix`: a run of these tests beside
    another (another checkout's) must not count the other's guests.
    """
    uids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            continue
        ours = config.machine_prefix in cgroups
        if (
            ours
            and cmdline[0].endswith(b"qemu-system-x86_64")
            and b"isorunner-boot-test" in cmdline
        ):
            (uid_line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
            uids.add(int(uid_line.split()[1]))
    return uids
