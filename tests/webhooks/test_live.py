"""Tests for live build logs: SSE framing, the shared tailer, resuming without repeats."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirLogs, WebStore
from webhooks.app import create_app
from webhooks.build import BuildCatalog, BuildLogSource, BuildState
from webhooks.config import WebhookConfig
from webhooks.exceptions import InvalidParameter
from webhooks.live import LogFollowers, end_message, sse_message, start_offset

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())


@dataclass
class Event:
    """One parsed server-sent event."""

    name: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


def parse(stream: str) -> list[Event]:
    """Parse an SSE stream (as the browser's EventSource does, for our subset)."""
    events = []
    for block in stream.split("\n\n"):
        event = Event()
        for line in block.split("\n"):
            if not line or line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event.name = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data.append(value)
        if event.data:
            events.append(event)
    return events


def lines_of(events: list[Event]) -> list[str]:
    """The log lines carried by the message events."""
    return [line for e in events if e.name == "message" for line in e.data]


def test_sse_message_frames_lines_with_the_end_offset() -> None:
    """Each line is one data field, the id is the end offset, CRs are dropped."""
    data = "one\n\ntwo\r\n<é>\n".encode()
    assert sse_message(17, data) == "id: 17\ndata: one\ndata: \ndata: two\ndata: <é>\n\n".encode()
    assert parse(sse_message(17, data).decode())[0].data == ["one", "", "two", "<é>"]


def test_end_message_carries_state_and_detail_as_json() -> None:
    """The end event's data is JSON, so a multi-line detail cannot break the frame."""
    store = WebStore()
    record = store.add(state=BuildState.FAILED, detail="line\nnext")
    event = parse(end_message(5, record).decode())[0]
    assert (event.name, event.id) == ("end", "5")
    assert json.loads(event.data[0]) == {"state": "failed", "detail": "line\nnext"}


@pytest.fixture
def store() -> WebStore:
    """A store with one running build."""
    store = WebStore()
    store.add(state=BuildState.RUNNING)
    return store


@pytest.fixture
def logs(tmp_path: Path) -> DirLogs:
    """Logs in a temporary directory."""
    return DirLogs(tmp_path)


def _quick(catalog: BuildCatalog, logs: BuildLogSource | None) -> LogFollowers:
    return LogFollowers(
        catalog, logs, poll_seconds=0.01, state_seconds=0.01, max_stream_seconds=0.3
    )


@pytest.fixture
def client(store: WebStore, logs: DirLogs) -> Iterator[TestClient]:
    """A client of the app whose streams end after 0.3 s."""
    app = create_app(
        CONFIG, sink=store, catalog=store, logs=logs, clock=lambda: T0, followers=_quick
    )
    with TestClient(app) as client:
        yield client


def test_stream_of_a_finished_build_sends_all_lines_then_end(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A finished build's stream carries its whole log, then `end` with the state."""
    logs.append(1, "one\ntwo\nlast line without newline")
    store.set_state(1, BuildState.SUCCEEDED, "ISO built")
    response = client.get("/builds/1/log/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith("retry: 1000\n\n")
    events = parse(response.text)
    assert lines_of(events) == ["one", "two", "last line without newline"]
    assert events[-1].name == "end"
    assert json.loads(events[-1].data[0]) == {"state": "succeeded", "detail": "ISO built"}
    assert events[-1].id == str(len(b"one\ntwo\nlast line without newline"))


def test_stream_resumes_after_last_event_id_without_repeats(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A reconnect with `Last-Event-ID` gets exactly the lines after that offset."""
    logs.append(1, "".join(f"line {n}\n" for n in range(10)))
    store.set_state(1, BuildState.FAILED)
    events = parse(client.get("/builds/1/log/stream").text)
    offsets = [int(e.id) for e in events if e.id is not None]
    assert offsets == sorted(offsets)
    for offset in (0, 7, 35, offsets[-1]):
        resumed = parse(
            client.get("/builds/1/log/stream", headers={"Last-Event-ID": str(offset)}).text
        )
        expected = logs.path(1).read_bytes()[offset:].decode().splitlines()
        assert lines_of(resumed) == expected
        assert resumed[-1].name == "end"
    # Last-Event-ID wins over ?after=, which is only the page's starting point.
    response = client.get("/builds/1/log/stream?after=0", headers={"Last-Event-ID": "63"})
    assert lines_of(parse(response.text)) == ["line 9"]
    assert lines_of(parse(client.get("/builds/1/log/stream?after=56").text)) == ["line 8", "line 9"]


def test_stream_of_a_running_build_ends_without_end_event_and_resumes(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A stream held past its time limit closes without `end`; the reconnect continues."""
    logs.append(1, "one\n")
    first = parse(client.get("/builds/1/log/stream").text)
    assert lines_of(first) == ["one"]
    assert all(e.name != "end" for e in first)
    logs.append(1, "two\nthree\n")
    store.set_state(1, BuildState.CANCELLED, "superseded")
    second = parse(
        client.get("/builds/1/log/stream", headers={"Last-Event-ID": first[-1].id or ""}).text
    )
    assert lines_of(second) == ["two", "three"]
    assert second[-1].name == "end"


@pytest.mark.parametrize(
    ("headers", "query"), [({"Last-Event-ID": "x"}, ""), ({}, "?after=-1"), ({}, "?after=1e3")]
)
def test_stream_refuses_a_bad_offset(
    client: TestClient, headers: dict[str, str], query: str
) -> None:
    """An offset that is not a whole number is 400."""
    assert client.get(f"/builds/1/log/stream{query}", headers=headers).status_code == 400


@pytest.mark.parametrize(
    ("last_event_id", "after", "start"),
    [(None, None, 0), ("", "", 0), (None, "40", 40), ("12", "40", 12), ("0", "40", 0)],
)
def test_start_offset_prefers_last_event_id_then_after(
    last_event_id: str | None, after: str | None, start: int
) -> None:
    """A reconnecting browser's Last-Event-ID wins over the page's `after`; else 0."""
    assert start_offset(last_event_id, after) == start


def test_start_offset_refuses_more_than_18_digits() -> None:
    """An offset too long to be a file position is refused, naming the parameter."""
    with pytest.raises(InvalidParameter, match="Last-Event-ID must be a byte offset"):
        start_offset("9" * 19, None)


def test_stream_of_unknown_build_is_404(client: TestClient) -> None:
    """Only stored builds can be followed."""
    assert client.get("/builds/5/log/stream").status_code == 404


async def _collect(stream: AsyncIterator[bytes], into: list[Event]) -> None:
    buffer = ""
    async for chunk in stream:
        buffer += chunk.decode()
        *complete, buffer = buffer.split("\n\n")
        for block in complete:
            into.extend(parse(block + "\n\n"))


@pytest.mark.anyio
async def test_followers_get_every_appended_line_once_then_end(
    store: WebStore, logs: DirLogs
) -> None:
    """Lines appended while clients follow reach each client once, in order, then `end`."""
    hub = LogFollowers(store, logs, poll_seconds=0.01, state_seconds=0.01)
    logs.append(1, "before\n")
    received: list[list[Event]] = [[] for _ in range(5)]
    expected = ["before"] + [f"line {n} <b>&amp;</b>" for n in range(200)]
    async with hub.running(), anyio.create_task_group() as group:
        for events in received:
            group.start_soon(_collect, hub.follow(1, 0), events)
        await anyio.sleep(0.05)
        assert hub.tailers == 1  # one tailer serves all five followers
        for n in range(200):
            logs.append(1, f"line {n} <b>&amp;</b>\n")
            if n % 20 == 0:
                await anyio.sleep(0.02)
        logs.append(1, "partial")
        await anyio.sleep(0.05)
        logs.append(1, " line\n")
        store.set_state(1, BuildState.SUCCEEDED)
    for events in received:
        assert lines_of(events) == [*expected, "partial line"]
        assert [e.name for e in events].count("end") == 1
        assert events[-1].name == "end"
    assert hub.tailers == 0


@pytest.mark.anyio
async def test_follower_behind_the_window_catches_up_from_the_file(
    store: WebStore, logs: DirLogs
) -> None:
    """A follower resuming far behind the tailer's window reads the file, losing nothing."""
    hub = LogFollowers(store, logs, poll_seconds=0.01, state_seconds=0.01, window_bytes=64)
    logs.append(1, "".join(f"old {n:05d}\n" for n in range(50_000)))  # 500 KB
    live: list[Event] = []
    late: list[Event] = []
    async with hub.running(), anyio.create_task_group() as group:
        group.start_soon(_collect, hub.follow(1, 0), live)
        await anyio.sleep(0.05)
        for n in range(100):
            logs.append(1, f"new {n}\n")
        await anyio.sleep(0.1)
        group.start_soon(_collect, hub.follow(1, 100_000), late)
        await anyio.sleep(0.05)
        store.set_state(1, BuildState.FAILED)
    text = logs.path(1).read_bytes()
    assert lines_of(live) == text.decode().splitlines()
    assert lines_of(late) == text[100_000:].decode().splitlines()


@pytest.mark.anyio
async def test_tailer_stops_when_its_last_follower_leaves(store: WebStore, logs: DirLogs) -> None:
    """Nobody following a build means no task polls its log."""
    hub = LogFollowers(store, logs, poll_seconds=0.01, state_seconds=0.01)
    logs.append(1, "x\n")
    async with hub.running():
        stream = hub.follow(1, 0)
        assert await anext(stream) == b"retry: 1000\n\n"
        assert hub.tailers == 1
        await stream.aclose()
        await anyio.sleep(0.05)
        assert hub.tailers == 0


@pytest.mark.anyio
async def test_a_failing_catalog_ends_streams_without_end(logs: DirLogs) -> None:
    """A tailer whose store fails ends its followers' streams (they reconnect), not the app."""

    class Broken:
        async def get(self, build_id: int) -> None:
            raise OSError(5, "Input/output error")

    hub = LogFollowers(Broken(), logs, poll_seconds=0.01, state_seconds=0.01)
    logs.append(1, "x\n")
    events: list[Event] = []
    async with hub.running():
        with anyio.fail_after(2):
            await _collect(hub.follow(1, 0), events)
    assert lines_of(events) == ["x"]
    assert all(e.name != "end" for e in events)
