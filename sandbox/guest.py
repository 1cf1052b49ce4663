"""`GuestSession`: a running boot-test guest's serial console and QMP, from start to quit.

Does I/O: Unix sockets in the run's directory, reached through an `O_PATH` descriptor
of that directory (`/proc/self/fd/N/serial.sock`) so that a long sandbox path never hits
the 108-byte limit of socket paths; and one file read (the screenshot), which never
follows a link and is bounded. QEMU waits for the serial connection before it starts
the guest, so no console byte is lost. The console goes to a `SerialWatch` until the
expected pattern, a failure pattern, the guest's reset or power-off (a QMP SHUTDOWN
event: QEMU runs with `-action reboot=shutdown,shutdown=pause`, so the machine pauses
and the screen stays for the screenshot) or the timeout. Then `screendump` (PNG) and
`quit` over QMP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sandbox.exceptions import QmpError
from sandbox.qmp import QmpClient
from sandbox.serial import SerialWatch
from sandbox.vm import SCREENSHOT

LogSink = Callable[[str], Awaitable[None]]
Outcome = Literal["passed", "failed", "timed_out"]

#: The verdict's reason when QEMU never opened its serial socket.
NOT_STARTED = "QEMU did not start"
#: After a failure pattern, the console is read this much longer (the rest of a panic).
FAILURE_TAIL_SECONDS = 2.0
MAX_SCREENSHOT = 16 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = 1 << 16
#: QMP SHUTDOWN reasons, in words.
_SHUTDOWN_REASONS = {
    "guest-reset": "the guest reset the machine",
    "guest-shutdown": "the guest powered the machine off",
    "guest-panic": "the guest reported a panic",
}


@dataclass(slots=True)
class Verdict:
    """How the console ended, and the screen at that moment."""

    outcome: Outcome
    seconds: float
    reason: str
    screenshot: bytes | None = None


class GuestSession:
    """Watches one guest; `run` returns when there is a verdict and QEMU was told to quit."""

    def __init__(
        self,
        *,
        work: Path,
        qemu: asyncio.Future[Any],
        expect: tuple[str, ...],
        timeout_seconds: float,
        watch: SerialWatch,
        log_sink: LogSink,
        log_lines: int,
        start_seconds: float = 300.0,
    ) -> None:
        """Prepare to watch the guest of one container.

        Args:
            work: The run's directory on the host (QEMU's sockets and files).
            qemu: The container's task; when it ends, QEMU is gone.
            expect: The expected patterns (for the messages).
            timeout_seconds: How long the guest may take, from its start.
            watch: Fed every console byte.
            log_sink: Receives the console's complete lines ("console: ..."), bounded.
            log_lines: At most this many console lines go to the log sink.
            start_seconds: How long QEMU may take to open its sockets.
        """
        self.work = work
        self.qemu = qemu
        self.expect = " or ".join(map(repr, expect))
        self.timeout = timeout_seconds
        self.watch = watch
        self.log_sink = log_sink
        self.log_budget = log_lines
        self.start_seconds = start_seconds
        self.fd = -1

    async def run(self) -> Verdict:
        """Watch until a verdict, take the screenshot and quit QEMU.

        Returns:
            The verdict (`NOT_STARTED` as the reason when QEMU never listened).
        """
        try:
            if not await self._wait_for_sockets():
                return Verdict("failed", 0.0, NOT_STARTED)
            qmp = await QmpClient.open(self._path("qmp.sock"))
            try:
                return await self._watch(qmp)
            finally:
                await qmp.close()
        except QmpError:
            if self.qemu.done():
                return Verdict("failed", 0.0, NOT_STARTED)
            raise
        finally:
            if self.fd >= 0:
                os.close(self.fd)

    async def _watch(self, qmp: QmpClient) -> Verdict:
        try:
            reader, writer = await asyncio.open_unix_connection(
                self._path("serial.sock"), limit=_CHUNK
            )
        except OSError:
            return Verdict("failed", 0.0, NOT_STARTED)
        try:
            async with asyncio.timeout(30.0):
                await qmp.handshake()
            verdict = await self._read_console(reader, qmp)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not self.qemu.done():
            verdict.screenshot, note = await self._screenshot_and_quit(qmp)
            if note:
                await self.log_sink(f"boot test: {note}")
        return verdict

    async def _wait_for_sockets(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_seconds
        while loop.time() < deadline and not self.qemu.done():
            if self.fd < 0:
                with contextlib.suppress(FileNotFoundError):
                    self.fd = os.open(self.work, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
            if self.fd >= 0 and await asyncio.to_thread(self._sockets_exist):
                return True
            await asyncio.sleep(0.05)
        return False

    def _sockets_exist(self) -> bool:
        return all(os.path.exists(self._path(n)) for n in ("serial.sock", "qmp.sock"))

    def _path(self, name: str) -> str:
        return f"/proc/self/fd/{self.fd}/{name}"

    async def _read_console(self, reader: asyncio.StreamReader, qmp: QmpClient) -> Verdict:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout
        read: asyncio.Future[bytes] | None = None
        event: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                read = read or asyncio.ensure_future(reader.read(_CHUNK))
                event = event or asyncio.ensure_future(qmp.next_event())
                waiting: set[asyncio.Future[Any]] = {read, event}
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                seconds = loop.time() - started
                if not done:
                    return Verdict(
                        "timed_out",
                        seconds,
                        f"no {self.expect} on the serial console within {self.timeout:g} s",
                    )
                if event in done:
                    stopped = _stopped(event)
                    event = None
                    if stopped:
                        return Verdict("failed", seconds, f"{stopped} before {self.expect} showed")
                if read not in done:
                    continue
                chunk, read = read.result(), None
                match = self.watch.feed(chunk)
                await self._log_new_lines()
                if not chunk:
                    return Verdict("failed", seconds, f"QEMU ended before {self.expect} showed")
                if match is not None and match.kind == "expect":
                    return Verdict("passed", seconds, f"{match.line!r} after {seconds:.1f} s")
                if match is not None:
                    await self._read_more(reader, FAILURE_TAIL_SECONDS)
                    return Verdict("failed", seconds, f"{match.pattern!r}: {match.line[:300]}")
        finally:
            for pending in (read, event):
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, QmpError, OSError):
                        await pending

    async def _read_more(self, reader: asyncio.StreamReader, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while chunk := await reader.read(_CHUNK):
                    self.watch.feed(chunk)
                    await self._log_new_lines()

    async def _log_new_lines(self) -> None:
        for line in self.watch.drain_new():
            if self.log_budget > 0:
                await self.log_sink(f"console: {line}")
            elif self.log_budget == 0:
                await self.log_sink("boot test: more serial console output is not logged")
            self.log_budget -= 1

    async def _screenshot_and_quit(self, qmp: QmpClient) -> tuple[bytes | None, str]:
        screenshot: bytes | None = None
        note = ""
        try:
            async with asyncio.timeout(30.0):
                await qmp.execute("screendump", {"filename": SCREENSHOT, "format": "png"})
            screenshot = await asyncio.to_thread(read_png, self.work / "screen.png")
            if screenshot is None:
                note = "no screenshot: QEMU's file is not a PNG image of a sane size"
        except (QmpError, TimeoutError) as exc:
            note = f"no screenshot: {exc!r}"
        # If QEMU does not quit, the caller stops its container.
        with contextlib.suppress(QmpError, TimeoutError):
            async with asyncio.timeout(10.0):
                await qmp.execute("quit")
        return screenshot, note


def _stopped(event: asyncio.Future[dict[str, Any]]) -> str:
    """Words for a QMP SHUTDOWN event of the guest's; "" for any other event."""
    try:
        message = event.result()
    except QmpError:
        return ""
    if message.get("event") != "SHUTDOWN":
        return ""
    data = message.get("data")
    reason = data.get("reason", "") if isinstance(data, dict) else ""
    return _SHUTDOWN_REASONS.get(str(reason), f"the machine stopped ({str(reason)[:40]})")


def read_png(path: Path) -> bytes | None:
    """QEMU's screenshot, if it is a regular file holding a PNG of a sane size."""
    data = read_regular(path, MAX_SCREENSHOT)
    if data is None or not data.startswith(_PNG_SIGNATURE):
        return None
    return data


def read_regular(path: Path, limit: int) -> bytes | None:
    """Read a regular file written by a container, never following a link; None if not one.

    Args:
        path: The file.
        limit: Largest size accepted.

    Returns:
        Its bytes, or None if it is missing, not a regular file, or bigger than `limit`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return handle.read(limit + 1)[:limit]
