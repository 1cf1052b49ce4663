"""Tests for sandbox.vm: QEMU command lines, the probe guest and the UEFI firmware choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.vm import (
    IMAGE,
    PROBE_MARKER,
    SECCOMP,
    KernelBoot,
    UefiFirmware,
    VmSpec,
    drop_privileges,
    probe_argv,
    probe_image,
    qemu_argv,
    select_uefi_firmware,
)

SAMPLES = Path(__file__).parent.parent / "samples" / "qemu-firmware" / "debian13"
OVMF = UefiFirmware("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")


def _value(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_qemu_argv_bios_cdrom_is_the_hardened_command_line() -> None:
    """A BIOS boot from CD-ROM: i440fx, TCG, sockets, paused on reset, seccomp, no NIC."""
    assert qemu_argv(VmSpec(firmware="bios")) == [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-name",
        "isorunner-boot-test",
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        "2048M",
        "-display",
        "none",
        "-device",
        "VGA",
        "-qmp",
        "unix:/build/work/qmp.sock,server=on,wait=off",
        "-chardev",
        "socket,id=serial0,path=/build/work/serial.sock,server=on,wait=on",
        "-serial",
        "chardev:serial0",
        "-action",
        "reboot=shutdown,shutdown=pause",
        "-sandbox",
        SECCOMP,
        "-drive",
        f"file={IMAGE},format=raw,if=ide,media=cdrom,readonly=on",
        "-nic",
        "none",
    ]


def test_qemu_argv_uefi_uses_q35_and_pflash_with_a_writable_vars_copy() -> None:
    """UEFI: q35, OVMF's code read-only and the variable store copy writable."""
    argv = qemu_argv(VmSpec(firmware="uefi", uefi=OVMF))
    assert _value(argv, "-machine") == ["q35"]
    assert _value(argv, "-drive")[:2] == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=/build/work/efivars.fd",
    ]


def test_qemu_argv_usb_attaches_the_iso_read_only_as_a_usb_disk() -> None:
    """The USB medium is a read-only usb-storage disk on an xHCI controller."""
    argv = qemu_argv(VmSpec(firmware="bios", medium="usb"))
    assert _value(argv, "-device")[1:] == [
        "qemu-xhci,id=xhci",
        "usb-storage,bus=xhci.0,drive=usbdisk,removable=on,bootindex=0",
    ]
    assert f"file={IMAGE},format=raw,if=none,id=usbdisk,readonly=on" in argv


def test_qemu_argv_network_is_user_mode_without_host_forwarding() -> None:
    """With network, the guest gets slirp and an e1000; never a hostfwd or guestfwd."""
    argv = qemu_argv(VmSpec(firmware="bios", network=True))
    assert _value(argv, "-nic") == ["user,model=e1000"]
    assert not any("fwd" in arg for arg in argv)


def test_qemu_argv_kernel_mode_passes_kernel_initrd_and_append() -> None:
    """Kernel mode adds -kernel, -initrd and -append and keeps the ISO attached."""
    kernel = KernelBoot("/build/work/vmlinuz", "/build/work/initrd", "a=b console=ttyS0,115200")
    argv = qemu_argv(VmSpec(firmware="bios", kernel=kernel))
    assert argv[-6:] == [
        "-kernel",
        "/build/work/vmlinuz",
        "-initrd",
        "/build/work/initrd",
        "-append",
        "a=b console=ttyS0,115200",
    ]
    assert any(arg.startswith(f"file={IMAGE},") for arg in argv)


def test_qemu_argv_kvm_uses_the_host_cpu() -> None:
    """Under KVM the guest sees the host CPU; under TCG the 'max' model."""
    argv = qemu_argv(VmSpec(firmware="bios", accelerator="kvm", cpus=2, memory_mib=512))
    assert (_value(argv, "-accel"), _value(argv, "-cpu")) == (["kvm"], ["host"])
    assert (_value(argv, "-smp"), _value(argv, "-m")) == (["2"], ["512M"])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"firmware": "efi"}, "firmware must be"),
        ({"firmware": "uefi"}, "needs the OVMF files"),
        ({"firmware": "bios", "medium": "floppy"}, "medium must be"),
        ({"firmware": "bios", "accelerator": "hvf"}, "accelerator must be"),
        ({"firmware": "bios", "memory_mib": 8}, "memory_mib"),
        ({"firmware": "bios", "cpus": 0}, "cpus"),
        ({"firmware": "bios", "kernel": KernelBoot("/k", None, "x" * 3000)}, "longer than"),
    ],
)
def test_vm_spec_rejects_bad_values(kw: dict[str, object], message: str) -> None:
    """A VmSpec that QEMU could not run, or that is too big, is refused with a reason."""
    with pytest.raises(ValueError, match=message):
        VmSpec(**kw)  # type: ignore[arg-type]


def test_drop_privileges_runs_as_nobody_without_capabilities() -> None:
    """QEMU runs as uid/gid 65534, no supplementary groups, no inheritable capabilities."""
    assert drop_privileges(["qemu"]) == [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        "qemu",
    ]


def test_probe_argv_is_bounded_in_time_and_exits_through_the_debug_device() -> None:
    """The probe is killed after its time and can end QEMU itself (isa-debug-exit)."""
    argv = probe_argv("kvm", seconds=5)
    assert argv[:3] == ["timeout", "--signal=KILL", "5"]
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert _value(argv, "-accel") == ["kvm"]


def test_probe_image_is_a_boot_sector_carrying_the_marker() -> None:
    """512 bytes, the 0x55AA signature, the marker at the address the code loads."""
    image = probe_image()
    assert len(image) == 512
    assert image[510:] == b"\x55\xaa"
    address = image[6] | image[7] << 8
    offset = address - 0x7C00
    assert image[offset : offset + len(PROBE_MARKER)] == PROBE_MARKER.encode()


def _samples() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(SAMPLES.glob("*.json"))]


def test_select_uefi_firmware_picks_debians_plain_ovmf() -> None:
    """From Debian's descriptors, the one without Secure Boot and SMM is chosen."""
    assert select_uefi_firmware(_samples()) == OVMF


def test_select_uefi_firmware_skips_secure_boot_even_when_it_comes_first() -> None:
    """Secure Boot and SMM descriptors are skipped; without a plain one there is none."""
    samples = [s for s in _samples() if "secure" in s[0]]
    assert len(samples) == 2
    assert select_uefi_firmware(samples) is None


def test_select_uefi_firmware_ignores_broken_and_hostile_descriptors() -> None:
    """Invalid JSON, wrong shapes, relative or '..' paths and other targets are skipped."""
    good = json.loads((SAMPLES / "60-edk2-x86_64.json").read_text())

    def variant(**changes: object) -> bytes:
        data = json.loads(json.dumps(good))
        data.update(changes)
        return json.dumps(data).encode()

    relative = json.loads(json.dumps(good["mapping"]))
    relative["executable"]["filename"] = "OVMF_CODE.fd"
    dotdot = json.loads(json.dumps(good["mapping"]))
    dotdot["nvram-template"]["filename"] = "/usr/share/../../etc/shadow"
    bad = [
        ("10-not-json.json", b"{nope"),
        ("11-list.json", b"[]"),
        ("12-bios.json", variant(**{"interface-types": ["bios"]})),
        ("13-memory.json", variant(mapping={"device": "memory", "filename": "/x.fd"})),
        ("14-arm.json", variant(targets=[{"architecture": "aarch64", "machines": ["virt-*"]}])),
        ("15-relative.json", variant(mapping=relative)),
        ("16-dotdot.json", variant(mapping=dotdot)),
        ("17-features.json", variant(features="secure-boot")),
    ]
    assert select_uefi_firmware(bad) is None
    assert select_uefi_firmware([*bad, ("99-good.json", variant())]) == OVMF
