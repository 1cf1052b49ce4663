"""Tests for sandbox.serial: the boot test's verdict from a hostile serial console."""

from __future__ import annotations

import pytest

from sandbox.serial import DEFAULT_EXPECT, DEFAULT_FAILURES, SerialWatch, clean


def test_serial_watch_matches_a_prompt_that_has_no_newline_yet() -> None:
    """A login prompt is found while its line is still unfinished."""
    watch = SerialWatch()
    assert watch.feed(b"Welcome\r\n\r\narchiso lo") is None
    match = watch.feed(b"gin: ")
    assert match is not None
    assert (match.kind, match.pattern, match.line) == ("expect", "login:", "archiso login:")


def test_serial_watch_matches_archiso_autologin_shell() -> None:
    """Releng's autologin shell prompt counts as booted by default."""
    match = SerialWatch().feed(b"\x1b[1m\x1b[31mroot\x1b[m@archiso \x1b[1m~ \x1b[m# ")
    assert match is not None
    assert match.kind == "expect"
    assert match.line == "root@archiso ~ #"


def test_serial_watch_reports_a_kernel_panic_as_failure() -> None:
    """A panic line is a failure even when a login prompt follows in the same read."""
    match = SerialWatch().feed(
        b"[    5.9] Kernel panic - not syncing: Attempted to kill init!\narchiso login: "
    )
    assert match is not None
    assert match.kind == "failure"
    assert match.pattern == "Kernel panic - not syncing"


def test_serial_watch_keeps_the_first_match() -> None:
    """Once the system is up, later failure lines do not change the verdict."""
    watch = SerialWatch()
    first = watch.feed(b"archiso login: ")
    assert watch.feed(b"\nKernel panic - not syncing\n") == first


def test_serial_watch_uses_given_patterns_only() -> None:
    """Custom patterns replace the defaults: 'login:' no longer counts."""
    watch = SerialWatch(expect=["READY"], failures=["BOOM"])
    assert watch.feed(b"archiso login: \n") is None
    match = watch.feed(b"system READY\n")
    assert match is not None
    assert match.line == "system READY"


def test_serial_watch_matches_syslinux_and_firmware_failures() -> None:
    """SYSLINUX's missing kernel and SeaBIOS's unbootable medium are failures."""
    for text in (
        b"Loading /arch/boot/x86_64/vmlinuz-missing... failed: No such file or directory\n",
        b"Boot failed: could not read the boot disk\n",
        b"Error loading \\arch\\boot\\x86_64\\vmlinuz-linux: Not Found\n",
    ):
        match = SerialWatch().feed(text)
        assert match is not None
        assert match.kind == "failure", text


def test_serial_watch_keeps_only_the_tail() -> None:
    """Only the last tail_lines lines are kept, the unfinished one included."""
    watch = SerialWatch(tail_lines=3)
    watch.feed(b"".join(b"line %d\n" % i for i in range(10)) + b"partial")
    assert watch.lines() == ("line 8", "line 9", "partial")


def test_serial_watch_cuts_long_lines_and_bounds_memory() -> None:
    """Megabytes without a newline are cut into bounded lines; nothing grows past the cap."""
    watch = SerialWatch(max_line_bytes=100, tail_lines=5)
    for _ in range(100):
        assert watch.feed(b"A" * 100_000) is None
    lines = watch.lines()
    assert len(lines) == 5
    assert all(len(line) <= 100 for line in lines)
    assert watch.total_bytes == 10_000_000


def test_serial_watch_survives_an_adversarial_near_match() -> None:
    """A long run of almost-patterns ('login' without the colon) never matches."""
    watch = SerialWatch(max_line_bytes=1 << 16)
    for _ in range(50):
        assert watch.feed(b"login" * 20_000) is None
    assert watch.first is None


def test_serial_watch_drains_complete_lines_once() -> None:
    """drain_new returns each complete line once, and never the unfinished one."""
    watch = SerialWatch()
    watch.feed(b"a\nb\nc")
    assert watch.drain_new() == ["a", "b"]
    assert watch.drain_new() == []
    watch.feed(b"\n")
    assert watch.drain_new() == ["c"]


def test_serial_watch_notices_kernel_output() -> None:
    """kernel_seen tells whether the kernel itself wrote to the serial console."""
    watch = SerialWatch()
    watch.feed(b"ISOLINUX 6.04\nLoading /arch/boot/x86_64/vmlinuz-linux... ok\n")
    assert not watch.kernel_seen
    watch.feed(b"[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists)\n")
    assert watch.kernel_seen


def test_serial_watch_rejects_empty_patterns() -> None:
    """An empty pattern would match every line: refused."""
    with pytest.raises(ValueError, match="must not be empty"):
        SerialWatch(expect=[""])
    with pytest.raises(ValueError, match="at least one"):
        SerialWatch(expect=[])


def test_clean_drops_escape_sequences_and_control_characters() -> None:
    """CSI sequences, bare escapes, carriage returns and bells go; text and tabs stay."""
    raw = b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe:\tloading\x07 Boot0001\r\x1bc!"
    assert clean(raw) == "BdsDxe:\tloading Boot0001!"


def test_clean_replaces_invalid_utf8() -> None:
    """Bytes that are not UTF-8 become replacement characters, not errors."""
    assert clean(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"


def test_default_patterns_do_not_overlap() -> None:
    """No default failure pattern is part of an expected one, or the reverse."""
    for failure in DEFAULT_FAILURES:
        for expect in DEFAULT_EXPECT:
            assert failure not in expect
            assert expect not in failure
