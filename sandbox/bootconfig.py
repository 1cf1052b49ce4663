"""The kernel, initramfs and command line an ISO boots, read from its boot loader configuration.

Pure: no I/O. The caller extracts the configuration files from the ISO (in a sandbox)
and passes their texts keyed by their path on the ISO. Understood: SYSLINUX/ISOLINUX
(`/boot/syslinux/*.cfg`, archiso's `bios.syslinux`), systemd-boot (`/loader/loader.conf`
and `/loader/entries/*.conf`, which archiso also copies to ISO 9660) and GRUB
(`/boot/grub/grub.cfg`, `linux` and `initrd` lines of a menu entry). The files come
from an untrusted ISO: they are split into lines and words only, never evaluated, and
every value is bounded.

`default_entry` picks the entry the firmware boots by default, preferring SYSLINUX,
then systemd-boot, then GRUB; `kernel_command_line` adds `console=ttyS0` so the serial
console sees the whole boot, as archiso's own CI does with `-append`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

SYSLINUX_DIR = "/boot/syslinux"
LOADER_DIR = "/loader"
GRUB_DIR = "/boot/grub"
#: The directories extracted from the ISO for `default_entry`.
CONFIG_DIRS = (SYSLINUX_DIR, LOADER_DIR, GRUB_DIR)
#: What is added to the ISO's own kernel command line in kernel mode.
SERIAL_CONSOLE = "console=ttyS0,115200"
_MAX_VALUE = 1024


@dataclass(frozen=True, slots=True)
class BootEntry:
    """One boot loader entry that starts a Linux kernel.

    Attributes:
        source: Path on the ISO of the file that defines it.
        label: The entry's name (SYSLINUX label, entry file name, GRUB title).
        kernel: Path of the kernel on the ISO (absolute, normalised).
        initrds: Paths of the initramfs images on the ISO, in load order.
        append: The kernel command line the entry gives.
    """

    source: str
    label: str
    kernel: str
    initrds: tuple[str, ...]
    append: str

    @property
    def serial_console(self) -> bool:
        """True if the command line sends the console to a serial port."""
        return has_serial_console(self.append)


def has_serial_console(append: str) -> bool:
    """True if a kernel command line has a `console=ttyS<n>` parameter."""
    return any(word.startswith("console=ttyS") for word in append.split())


def kernel_command_line(entry: BootEntry) -> str:
    """The ISO's own command line with the serial console added last (so it wins /dev/console)."""
    words = [w for w in entry.append.split() if not w.startswith("initrd=")]
    consoles = [w for w in words if w.startswith("console=")]
    if consoles and consoles[-1].startswith("console=ttyS0"):
        return " ".join(words)  # the serial console is the main one already
    return " ".join([*words, SERIAL_CONSOLE])


def default_entry(files: Mapping[str, str]) -> BootEntry | None:
    """The entry the ISO boots by default.

    Args:
        files: Text of each extracted configuration file, keyed by its path on the ISO.

    Returns:
        SYSLINUX's default entry if SYSLINUX is configured, else systemd-boot's, else
        GRUB's first entry; None when no entry starts a kernel.
    """
    for finder in (syslinux_entry, systemd_boot_entry, grub_entry):
        entry = finder(files)
        if entry is not None:
            return entry
    return None


def syslinux_entry(files: Mapping[str, str]) -> BootEntry | None:
    """SYSLINUX's default entry: the first DEFAULT naming a kernel label, else the first label."""
    names = sorted(
        (p for p in files if p.startswith(f"{SYSLINUX_DIR}/") and p.endswith(".cfg")),
        key=lambda p: (posixpath.basename(p) not in ("syslinux.cfg", "isolinux.cfg"), p),
    )
    entries: list[BootEntry] = []
    defaults: list[str] = []
    for name in names:
        current: dict[str, str] = {}
        for line in files[name].splitlines():
            keyword, _, value = line.strip().partition(" ")
            keyword, value = keyword.upper(), value.strip()[:_MAX_VALUE]
            if keyword == "LABEL":
                _close_syslinux(name, current, entries)
                current = {"label": value}
            elif keyword == "DEFAULT":
                defaults.append(value)
            elif current and keyword in ("LINUX", "KERNEL"):
                current["kernel"] = value
            elif current and keyword == "INITRD":
                current["initrd"] = value
            elif current and keyword == "APPEND":
                current["append"] = value
        _close_syslinux(name, current, entries)
    by_label = {e.label: e for e in reversed(entries)}
    for label in defaults:
        if label in by_label:
            return by_label[label]
    return entries[0] if entries else None


def _close_syslinux(source: str, current: dict[str, str], entries: list[BootEntry]) -> None:
    kernel = current.get("kernel", "")
    if not kernel or kernel.lower().endswith(".c32"):
        return
    base = posixpath.dirname(source)
    append = current.get("append", "")
    initrds = [p for p in current.get("initrd", "").split(",") if p]
    initrds += [p for w in append.split() if w.startswith("initrd=") for p in w[7:].split(",") if p]
    entries.append(
        BootEntry(
            source=source,
            label=current.get("label", ""),
            kernel=_iso_path(base, kernel.split()[0]),
            initrds=tuple(_iso_path(base, p) for p in initrds),
            append=" ".join(w for w in append.split() if not w.startswith("initrd=")),
        )
    )


def systemd_boot_entry(files: Mapping[str, str]) -> BootEntry | None:
    """systemd-boot's default entry (loader.conf `default`, a glob allowed), else the first."""
    prefix = f"{LOADER_DIR}/entries/"
    names = sorted(p for p in files if p.startswith(prefix) and p.endswith(".conf"))
    entries: list[BootEntry] = []
    for name in names:
        values: dict[str, list[str]] = {}
        for line in files[name].splitlines():
            key, _, value = line.strip().partition(" ")
            values.setdefault(key.lower(), []).append(value.strip()[:_MAX_VALUE])
        kernel = (values.get("linux") or values.get("efi") or [""])[0]
        if not kernel or "efi" in values:
            continue
        entries.append(
            BootEntry(
                source=name,
                label=name[len(prefix) :],
                kernel=_iso_path("/", kernel),
                initrds=tuple(
                    _iso_path("/", p) for v in values.get("initrd", []) for p in v.split()
                ),
                append=" ".join(values.get("options", [])),
            )
        )
    default = ""
    for line in files.get(f"{LOADER_DIR}/loader.conf", "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key.lower() == "default":
            default = value.strip()[:_MAX_VALUE]
    for entry in entries:
        if default and (entry.label == default or _glob_match(default, entry.label)):
            return entry
    return entries[0] if entries else None


def grub_entry(files: Mapping[str, str]) -> BootEntry | None:
    """The first GRUB menu entry of /boot/grub/grub.cfg with a `linux` line."""
    text = files.get(f"{GRUB_DIR}/grub.cfg")
    if text is None:
        return None
    label = ""
    kernel = ""
    append = ""
    initrds: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.strip()[:_MAX_VALUE].split()
        if not words:
            continue
        if words[0] == "menuentry":
            if kernel:
                break
            label = _quoted(line)
        elif words[0] in ("linux", "linuxefi") and len(words) > 1 and not kernel:
            kernel, append = words[1], " ".join(words[2:])
        elif words[0] in ("initrd", "initrdefi") and not initrds:
            initrds = tuple(words[1:])
    if not kernel:
        return None
    return BootEntry(
        source=f"{GRUB_DIR}/grub.cfg",
        label=label,
        kernel=_iso_path("/", kernel),
        initrds=tuple(_iso_path("/", p) for p in initrds),
        append=append,
    )


def _quoted(line: str) -> str:
    """The first quoted string of a line (a GRUB menu entry's title), or ""."""
    starts = [i for i in (line.find("'"), line.find('"')) if i >= 0]
    if not starts:
        return ""
    start = min(starts)
    end = line.find(line[start], start + 1)
    return line[start + 1 : end][:_MAX_VALUE] if end > start else ""


def _iso_path(base: str, path: str) -> str:
    # GRUB paths may carry a device, "($root)/arch/..."; keep what follows it.
    if path.startswith("(") and ")" in path:
        path = path[path.index(")") + 1 :]
    return posixpath.normpath(posixpath.join(base, path.replace("\\", "/")))


def _glob_match(pattern: str, name: str) -> bool:
    """systemd-boot's `default` glob (only '*' and '?'), matched without backtracking blow-up."""
    # Classic two-pointer wildcard match: O(len(pattern) * len(name)) at worst.
    p = n = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]):
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, n, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)
