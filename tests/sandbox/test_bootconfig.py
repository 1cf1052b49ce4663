"""Tests for sandbox.bootconfig: the kernel an ISO boots, read from its boot loader files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.bootconfig import (
    BootEntry,
    default_entry,
    grub_entry,
    has_serial_console,
    kernel_command_line,
    syslinux_entry,
    systemd_boot_entry,
)

RELENG = Path(__file__).parent.parent / "samples" / "archiso-releng"
UUID = "2023-11-14-22-13-20-00"


def _releng(*parts: str) -> dict[str, str]:
    """Releng's files as mkarchiso puts them on the ISO, placeholders filled in."""
    where = {"syslinux": "/boot/syslinux", "efiboot": "", "grub": "/boot/grub"}
    files: dict[str, str] = {}
    for path in sorted(RELENG.rglob("*")):
        relative = path.relative_to(RELENG)
        if path.is_dir() or relative.parts[0] not in parts:
            continue
        text = (
            path.read_text()
            .replace("%ARCHISO_LABEL%", "ARCH_202311")
            .replace("%ARCHISO_UUID%", UUID)
            .replace("%INSTALL_DIR%", "arch")
            .replace("%ARCH%", "x86_64")
        )
        files[where[relative.parts[0]] + "/" + "/".join(relative.parts[1:])] = text
    return files


ARCH_ENTRY = {
    "kernel": "/arch/boot/x86_64/vmlinuz-linux",
    "initrds": ("/arch/boot/x86_64/initramfs-linux.img",),
    "append": f"archisobasedir=arch archisosearchuuid={UUID}",
}


def test_syslinux_entry_follows_releng_defaults_to_the_arch_label() -> None:
    """Releng's DEFAULT select (a COM32 module) is skipped; archiso_sys.cfg's 'arch' wins."""
    entry = syslinux_entry(_releng("syslinux"))
    assert entry is not None
    assert (entry.source, entry.label) == ("/boot/syslinux/archiso_sys-linux.cfg", "arch")
    assert (entry.kernel, entry.initrds, entry.append) == tuple(ARCH_ENTRY.values())


def test_systemd_boot_entry_takes_loader_conf_default() -> None:
    """loader.conf's default names 01-archiso-linux.conf; memtest's efi entry is no kernel."""
    entry = systemd_boot_entry(_releng("efiboot"))
    assert entry is not None
    assert (entry.source, entry.label) == (
        "/loader/entries/01-archiso-linux.conf",
        "01-archiso-linux.conf",
    )
    assert (entry.kernel, entry.initrds, entry.append) == tuple(ARCH_ENTRY.values())


def test_grub_entry_takes_the_first_menu_entry() -> None:
    """Releng's grub.cfg: the first menuentry's linux and initrd lines."""
    entry = grub_entry(_releng("grub"))
    assert entry is not None
    assert entry.label.startswith("Arch Linux install medium (x86_64")
    assert (entry.kernel, entry.initrds, entry.append) == tuple(ARCH_ENTRY.values())


def test_default_entry_prefers_syslinux_then_systemd_boot_then_grub() -> None:
    """With every boot loader configured, SYSLINUX's entry is the default."""
    everything = _releng("syslinux", "efiboot", "grub")
    assert default_entry(everything) == syslinux_entry(everything)
    no_syslinux = _releng("efiboot", "grub")
    assert default_entry(no_syslinux) == systemd_boot_entry(no_syslinux)
    assert default_entry(_releng("grub")) == grub_entry(_releng("grub"))
    assert default_entry({}) is None


def test_syslinux_entry_reads_relative_paths_and_initrd_in_append() -> None:
    """Paths relative to the config's directory resolve; initrd= moves out of APPEND."""
    files = {
        "/boot/syslinux/syslinux.cfg": (
            "default live\nlabel live\n  kernel ../../k/vmlinuz\n"
            "  append initrd=/k/ucode.img,/k/initrd.img quiet console=ttyS0\n"
        )
    }
    entry = syslinux_entry(files)
    assert entry == BootEntry(
        source="/boot/syslinux/syslinux.cfg",
        label="live",
        kernel="/k/vmlinuz",
        initrds=("/k/ucode.img", "/k/initrd.img"),
        append="quiet console=ttyS0",
    )


def test_systemd_boot_default_glob_and_several_initrds() -> None:
    """loader.conf's default may be a glob; each initrd line adds an image."""
    files = {
        "/loader/loader.conf": "timeout 3\ndefault b-*\n",
        "/loader/entries/a.conf": "linux /a/vmlinuz\noptions a\n",
        "/loader/entries/b-live.conf": (
            "linux /b/vmlinuz\ninitrd /b/ucode.img\ninitrd /b/initramfs.img\noptions x y\n"
        ),
    }
    entry = systemd_boot_entry(files)
    assert entry is not None
    assert (entry.label, entry.initrds, entry.append) == (
        "b-live.conf",
        ("/b/ucode.img", "/b/initramfs.img"),
        "x y",
    )


def test_serial_console_is_seen_on_the_command_line() -> None:
    """console=ttyS<n> counts as a serial console; console=tty0 does not."""
    assert has_serial_console("a console=tty0 console=ttyS0,115200")
    assert not has_serial_console("a console=tty0 quiet")


def test_kernel_command_line_adds_the_serial_console_last() -> None:
    """The ISO's own arguments are kept and console=ttyS0 comes last, once."""
    entry = BootEntry("/x", "l", "/k", (), "archisobasedir=arch console=tty0 initrd=/i")
    assert kernel_command_line(entry) == "archisobasedir=arch console=tty0 console=ttyS0,115200"
    already = BootEntry("/x", "l", "/k", (), "a console=tty0 console=ttyS0,115200")
    assert kernel_command_line(already) == "a console=tty0 console=ttyS0,115200"


@pytest.mark.parametrize(
    "files",
    [
        {"/boot/syslinux/syslinux.cfg": "LABEL x\nCOM32 menu.c32\nLINUX hdt.c32\n"},
        {"/loader/entries/x.conf": "title only\noptions a\n"},
        {"/boot/grub/grub.cfg": "menuentry 'x' {\n  chainloader /efi\n}\n"},
        {"/boot/syslinux/other.txt": "LABEL x\nLINUX /k\n"},
    ],
)
def test_default_entry_ignores_entries_without_a_kernel(files: dict[str, str]) -> None:
    """COM32 modules, efi entries, chainloaders and non-config files start no kernel."""
    assert default_entry(files) is None


def test_default_entry_bounds_hostile_files() -> None:
    """Megabyte lines and a pathological default glob give bounded values, not a hang."""
    long = "x" * 2_000_000
    files = {
        "/boot/syslinux/syslinux.cfg": f"LABEL a\nLINUX /k\nAPPEND {long}\n",
        "/loader/loader.conf": "default " + "*a" * 500 + "b\n",
        "/loader/entries/" + "a" * 200 + ".conf": "linux /k\n",
    }
    entry = default_entry(files)
    assert entry is not None
    assert len(entry.append) <= 1024
    assert systemd_boot_entry(files) is not None
