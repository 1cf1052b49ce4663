"""`SerialWatch`: reads a guest's serial console for the boot test's verdict.

Pure: no I/O. The console is the guest's, so it is hostile: lines are cut at
`max_line_bytes`, only the last `tail_lines` are kept, escape sequences and control
characters are removed, patterns are plain substrings (no regular expression is ever
run on guest output), per-character work is done by `str` methods, and past `max_bytes`
the console is only counted. Prompts end without a newline ("archiso login: "), so a
short unfinished last line is matched too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: What a booted archiso shows on its serial console: a login prompt, or the shell of
#: releng's autologin.
DEFAULT_EXPECT: tuple[str, ...] = ("login:", "root@archiso")
#: Lines that mean the boot failed, whatever comes later.
DEFAULT_FAILURES: tuple[str, ...] = (
    "Kernel panic - not syncing",  # the kernel, e.g. init exited or no root
    "device did not show up after",  # archiso's initramfs did not find its medium
    "dropped into an emergency shell",  # mkinitcpio's init could not mount the root
    "You are in emergency mode",  # systemd's emergency.target
    "Could not find kernel image",  # SYSLINUX 4: the entry names a missing kernel
    "... failed: ",  # SYSLINUX 6: "Loading /arch/boot/x86_64/vmlinuz-linux... failed: ..."
    "Boot failed:",  # SeaBIOS: the medium is not bootable
    "No bootable device",  # SeaBIOS: nothing to boot
    "No bootable option or device was found",  # OVMF: nothing to boot
    "Error loading \\",  # systemd-boot: "Error loading \\arch\\boot\\...: ..."
)
#: An unfinished line longer than this is no prompt (it is matched once complete).
_PROMPT_BYTES = 512
#: Signs that the kernel itself writes to the serial console.
_KERNEL_SIGNS = ("Linux version ", "] Kernel command line:", "Run /init as init process")

MatchKind = Literal["expect", "failure"]


@dataclass(frozen=True, slots=True)
class SerialMatch:
    """A pattern found on the console.

    Attributes:
        kind: "expect" (the boot succeeded) or "failure".
        pattern: The pattern that matched.
        line: The (cleaned) line it matched in.
    """

    kind: MatchKind
    pattern: str
    line: str


class SerialWatch:
    """Feed it the console's bytes; it says when an expected or a failure pattern shows."""

    def __init__(
        self,
        expect: Sequence[str] = DEFAULT_EXPECT,
        failures: Sequence[str] = DEFAULT_FAILURES,
        *,
        tail_lines: int = 100,
        max_line_bytes: int = 1024,
        max_bytes: int = 8 << 20,
    ) -> None:
        if not expect or any(not p for p in (*expect, *failures)):
            raise ValueError("expect needs at least one pattern, and patterns must not be empty")
        self._expect = tuple(expect)
        self._failures = tuple(failures)
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._pending = bytearray()
        self._new: list[str] = []
        self._max_line = max_line_bytes
        self._max_bytes = max_bytes
        self._tail_lines = tail_lines
        self.total_bytes = 0
        self.kernel_seen = False
        self.first: SerialMatch | None = None

    def feed(self, data: bytes) -> SerialMatch | None:
        """Take the next bytes of the console.

        Args:
            data: Bytes as read from the serial socket.

        Returns:
            The first match ever found (once found it is returned on every later call),
            or None.
        """
        self.total_bytes += len(data)
        if self.total_bytes > self._max_bytes:
            return self.first  # flooded: the rest is counted, not read
        self._pending += data
        while True:
            end = self._pending.find(b"\n")
            if end < 0 and len(self._pending) < self._max_line:
                break
            cut = end if 0 <= end < self._max_line else self._max_line
            raw = bytes(self._pending[:cut])
            del self._pending[: cut + 1 if cut == end else cut]
            self._line(clean(raw))
        # Prompts are short: a long unfinished line is checked once it ends or is cut.
        if len(self._pending) <= _PROMPT_BYTES and (partial := clean(bytes(self._pending))):
            self._check(partial)
        return self.first

    @property
    def flooded(self) -> bool:
        """True once more than `max_bytes` arrived (the rest was not read)."""
        return self.total_bytes > self._max_bytes

    def lines(self) -> tuple[str, ...]:
        """The last lines seen (the unfinished one included), oldest first."""
        partial = clean(bytes(self._pending[: self._max_line]))
        lines = (*self._tail, partial) if partial else tuple(self._tail)
        return lines[-self._tail_lines :]

    def drain_new(self) -> list[str]:
        """The complete lines seen since the last call, oldest first."""
        new, self._new = self._new, []
        return new

    def _line(self, line: str) -> None:
        self._tail.append(line)
        self._new.append(line)
        if not self.kernel_seen and any(sign in line for sign in _KERNEL_SIGNS):
            self.kernel_seen = True
        self._check(line)

    def _check(self, line: str) -> None:
        if self.first is not None:
            return
        for pattern in self._failures:
            if pattern in line:
                self.first = SerialMatch(kind="failure", pattern=pattern, line=line)
                return
        for pattern in self._expect:
            if pattern in line:
                self.first = SerialMatch(kind="expect", pattern=pattern, line=line)
                return


def clean(raw: bytes) -> str:
    """Decode one console line and drop terminal escape sequences and control characters.

    Linear, with the per-character work done by `str` methods (the console is the
    guest's and may be flooded): the text is split at ESC; a piece starting with "["
    (CSI) loses its parameter bytes (0x20-0x3f) and final byte, any other piece its
    first character; then control characters are deleted.

    Args:
        raw: The line's bytes, without the newline.

    Returns:
        Printable text, trailing white space removed.
    """
    text = raw.decode("utf-8", errors="replace")
    if "\x1b" in text:
        pieces = text.split("\x1b")
        kept = [pieces[0]]
        for piece in pieces[1:]:
            if piece.startswith("["):
                kept.append(piece[1:].lstrip(_CSI_PARAMETERS)[1:])
            else:
                kept.append(piece[1:])
        text = "".join(kept)
    return text.translate(_CONTROL).rstrip()


#: CSI parameter and intermediate bytes (ECMA-48): what comes between "ESC [" and the final byte.
_CSI_PARAMETERS = "".join(chr(c) for c in range(0x20, 0x40))
#: Control characters other than TAB, deleted from console lines.
_CONTROL = dict.fromkeys([*range(0x09), *range(0x0A, 0x20), 0x7F])
