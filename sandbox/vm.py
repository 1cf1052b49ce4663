"""The boot test's virtual machine: QEMU command lines, UEFI firmware choice, the KVM probe.

Pure: no I/O. `qemu_argv` turns a frozen `VmSpec` into the argv of `qemu-system-x86_64`
run inside a sandbox container (paths are the container's); `select_uefi_firmware`
picks OVMF from QEMU's firmware descriptors (docs/interop/firmware.json), read from the
sandbox base by the caller; `probe_image` is a 512-byte boot sector that proves an
accelerator really runs a guest. `sandbox.boot` runs all of it.

The guest is untrusted: it gets no network device unless asked for (and then QEMU's
user-mode network, never a host forward), the ISO read-only, no reboot (a reset pauses
the machine and ends the run), and QEMU itself runs under its seccomp filter as an
unprivileged user
(`drop_privileges`), inside a container with the build's limits.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sandbox.nspawn import WORK_MOUNT

Firmware = Literal["bios", "uefi"]
Medium = Literal["cdrom", "usb"]
Accelerator = Literal["kvm", "tcg"]

QEMU = "qemu-system-x86_64"
#: Inside the container: the run's directory and the files QEMU uses there.
RUN_DIR = WORK_MOUNT
IMAGE = f"{RUN_DIR}/image.iso"
SERIAL_SOCKET = f"{RUN_DIR}/serial.sock"
QMP_SOCKET = f"{RUN_DIR}/qmp.sock"
UEFI_VARS = f"{RUN_DIR}/efivars.fd"
SCREENSHOT = f"{RUN_DIR}/screen.png"
KERNEL = f"{RUN_DIR}/vmlinuz"
INITRD = f"{RUN_DIR}/initrd"
PROBE_DISK = f"{RUN_DIR}/probe.img"
#: The user QEMU runs as (nobody in Arch and Debian); the container's root only sets up.
NOBODY = 65534
#: QEMU's seccomp filter: no obsolete syscalls, no setuid, no fork/exec, no nice/affinity.
SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#: The probe guest writes this on the serial port, then ends QEMU through isa-debug-exit.
PROBE_MARKER = "isorunner-probe-ok"
#: QEMU's exit status after the probe's write of 0x10 to isa-debug-exit: (0x10 << 1) | 1.
PROBE_EXIT_STATUS = 33
#: Longest kernel command line passed with -append (Linux x86 allows 2048 bytes).
MAX_APPEND = 2048


@dataclass(frozen=True, slots=True)
class UefiFirmware:
    """OVMF's code and variable-store template, as paths inside the sandbox base."""

    code: str
    vars_template: str


@dataclass(frozen=True, slots=True)
class KernelBoot:
    """Direct kernel boot: QEMU loads the kernel and initrd itself (container paths)."""

    kernel: str
    initrd: str | None
    append: str


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One virtual machine of the boot test.

    Attributes:
        firmware: "bios" (SeaBIOS, QEMU's default, on the i440fx machine) or "uefi"
            (OVMF on the q35 machine; `uefi` must be given).
        medium: The ISO as a CD-ROM, or as a USB disk (archiso images are hybrid).
        accelerator: "kvm" or "tcg" (emulation).
        memory_mib: Guest memory.
        cpus: Guest CPUs.
        network: Give the guest a NIC on QEMU's user-mode network (no host forwards).
        uefi: OVMF's files, for firmware "uefi".
        kernel: Boot this kernel directly instead of through the ISO's boot loader;
            the ISO stays attached so the initramfs finds its root.
    """

    firmware: Firmware
    medium: Medium = "cdrom"
    accelerator: Accelerator = "tcg"
    memory_mib: int = 2048
    cpus: int = 1
    network: bool = False
    uefi: UefiFirmware | None = None
    kernel: KernelBoot | None = None

    def __post_init__(self) -> None:
        if self.firmware not in ("bios", "uefi"):
            raise ValueError(f"firmware must be 'bios' or 'uefi', got {self.firmware!r}")
        if self.medium not in ("cdrom", "usb"):
            raise ValueError(f"medium must be 'cdrom' or 'usb', got {self.medium!r}")
        if self.accelerator not in ("kvm", "tcg"):
            raise ValueError(f"accelerator must be 'kvm' or 'tcg', got {self.accelerator!r}")
        if not 64 <= self.memory_mib <= 1 << 20:
            raise ValueError(f"memory_mib must be in [64, 1048576], got {self.memory_mib}")
        if not 1 <= self.cpus <= 64:
            raise ValueError(f"cpus must be in [1, 64], got {self.cpus}")
        if self.firmware == "uefi" and self.uefi is None:
            raise ValueError("firmware 'uefi' needs the OVMF files (uefi=...)")
        if self.kernel is not None and len(self.kernel.append.encode()) > MAX_APPEND:
            raise ValueError(f"the kernel command line is longer than {MAX_APPEND} bytes")


def qemu_argv(spec: VmSpec) -> list[str]:
    """The `qemu-system-x86_64` argv for one boot test (run as `drop_privileges(...)`).

    The serial console is a socket QEMU waits on before it starts the guest, so no byte
    of it is lost; QMP listens on a second socket for the screenshot and the quit.

    Args:
        spec: The machine.

    Returns:
        The argv, paths as seen inside the container.
    """
    uefi = spec.firmware == "uefi"
    argv = [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-name",
        "isorunner-boot-test",
        "-machine",
        "q35" if uefi else "pc",
        "-accel",
        spec.accelerator,
        # TCG's "max" model offers every feature it emulates (x86-64-v2 and up).
        "-cpu",
        "host" if spec.accelerator == "kvm" else "max",
        "-smp",
        str(spec.cpus),
        "-m",
        f"{spec.memory_mib}M",
        "-display",
        "none",
        # A standard VGA adapter: the screen the screenshot shows.
        "-device",
        "VGA",
        # QMP's socket first: QEMU waits for the serial connection before it goes on.
        "-qmp",
        f"unix:{QMP_SOCKET},server=on,wait=off",
        "-chardev",
        f"socket,id=serial0,path={SERIAL_SOCKET},server=on,wait=on",
        "-serial",
        "chardev:serial0",
        # A guest that resets or powers off is paused, not rebooted: the run ends with
        # a QMP SHUTDOWN event, and the screen stays for the screenshot.
        "-action",
        "reboot=shutdown,shutdown=pause",
        "-sandbox",
        SECCOMP,
    ]
    if uefi:
        assert spec.uefi is not None
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={spec.uefi.code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={UEFI_VARS}",
        ]
    if spec.medium == "cdrom":
        argv += ["-drive", f"file={IMAGE},format=raw,if=ide,media=cdrom,readonly=on"]
    else:
        argv += [
            "-device",
            "qemu-xhci,id=xhci",
            "-drive",
            f"file={IMAGE},format=raw,if=none,id=usbdisk,readonly=on",
            "-device",
            "usb-storage,bus=xhci.0,drive=usbdisk,removable=on,bootindex=0",
        ]
    # User-mode networking (slirp) without hostfwd: the guest can open connections
    # out, nothing can connect in. Without it the guest has no network device at all.
    argv += ["-nic", "user,model=e1000" if spec.network else "none"]
    if spec.kernel is not None:
        argv += ["-kernel", spec.kernel.kernel]
        if spec.kernel.initrd is not None:
            argv += ["-initrd", spec.kernel.initrd]
        argv += ["-append", spec.kernel.append]
    return argv


def drop_privileges(argv: Sequence[str]) -> list[str]:
    """Run `argv` as the unprivileged user `NOBODY`, with no capabilities and no groups.

    Args:
        argv: The command.

    Returns:
        The command behind util-linux `setpriv` (present in Arch's and Debian's base).
    """
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        *argv,
    ]


def probe_argv(accelerator: Accelerator, *, seconds: float) -> list[str]:
    """The argv that boots the probe guest with `accelerator`, bounded in time.

    The probe guest (`probe_image`) prints `PROBE_MARKER` on the serial port (QEMU's
    stdout here) and ends QEMU with exit status `PROBE_EXIT_STATUS`; coreutils'
    `timeout` kills QEMU when a guest hangs, as a KVM guest does where there is no
    nested virtualisation although /dev/kvm opens.

    Args:
        accelerator: "kvm" or "tcg".
        seconds: How long the guest may take.

    Returns:
        The argv (to run behind `drop_privileges`).
    """
    return [
        "timeout",
        "--signal=KILL",
        f"{seconds:g}",
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-machine",
        "pc",
        "-accel",
        accelerator,
        "-m",
        "16M",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive",
        f"file={PROBE_DISK},format=raw,if=ide",
        "-no-reboot",
        "-sandbox",
        SECCOMP,
    ]


def probe_image() -> bytes:
    """A 512-byte MBR boot sector: write `PROBE_MARKER` to COM1, then exit QEMU.

    Real-mode code loaded at 0x7c00 by the BIOS:

        cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
        next: lodsb; test al,al; jz done; out dx,al; jmp next
        done: mov al,0x10; out 0xf4,al        ; isa-debug-exit: QEMU exits with 33
        halt: hlt; jmp halt
    """
    message = PROBE_MARKER.encode() + b"\r\n\x00"
    message_at = 0x7C00 + 26
    code = bytes(
        (
            *(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, message_at & 0xFF, message_at >> 8),
            *(0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8),
            *(0xB0, 0x10, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD),
        )
    )
    assert len(code) == 26
    sector = code + message
    return sector + bytes(510 - len(sector)) + b"\x55\xaa"


def select_uefi_firmware(descriptors: Iterable[tuple[str, bytes]]) -> UefiFirmware | None:
    """Pick OVMF for an x86_64 q35 guest without Secure Boot from QEMU's firmware descriptors.

    Args:
        descriptors: (file name, contents) of each `/usr/share/qemu/firmware/*.json` in
            the sandbox base; lower names take precedence, as QEMU's interop spec says.

    Returns:
        The first suitable firmware, or None when there is none.
    """
    unwanted = {"secure-boot", "enrolled-keys", "requires-smm", "amd-sev-es", "intel-tdx"}
    for _name, raw in sorted(descriptors):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        firmware = _uefi_flash(data, unwanted)
        if firmware is not None:
            return firmware
    return None


def _uefi_flash(data: dict[str, object], unwanted: set[str]) -> UefiFirmware | None:
    interfaces = data.get("interface-types")
    features = data.get("features", [])
    mapping = data.get("mapping")
    targets = data.get("targets")
    if not isinstance(interfaces, list) or "uefi" not in interfaces:
        return None
    if not isinstance(features, list) or unwanted & {str(f) for f in features}:
        return None
    if not isinstance(mapping, dict) or mapping.get("device") != "flash":
        return None
    if not isinstance(targets, list) or not any(_q35_x86_64(t) for t in targets):
        return None
    code = _raw_file(mapping.get("executable"))
    template = _raw_file(mapping.get("nvram-template"))
    if code is None or template is None:
        return None
    return UefiFirmware(code=code, vars_template=template)


def _q35_x86_64(target: object) -> bool:
    if not isinstance(target, dict) or target.get("architecture") != "x86_64":
        return False
    machines = target.get("machines")
    return isinstance(machines, list) and any(
        isinstance(m, str) and fnmatch.fnmatchcase("pc-q35-9.0", m) for m in machines
    )


def _raw_file(entry: object) -> str | None:
    if not isinstance(entry, dict) or entry.get("format", "raw") != "raw":
        return None
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.startswith("/") or ".." in filename:
        return None
    return filename
