"""The server-rendered build pages: what they show and how it is rendered.

No network I/O: the template files are read once, when `Pages` is built (in
`create_app`). Jinja2 autoescapes every value, so untrusted text (repository and
branch names, commit titles, log lines) is always escaped; links to forges are only
made from `http(s)` URLs. The view functions (`commit_url`, `change_url`,
`duration`, `index_context`, `build_context`) are pure.

The build page is streamed: `Pages.build_page` renders everything around the log,
and the route streams the escaped log between the two halves, so a large log is
never held in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup

from webhooks.artifacts import download_path
from webhooks.build import (
    Artifact,
    BuildRecord,
    BuildRequest,
    BuildState,
    Forge,
    RefKind,
    Release,
    ReleaseState,
    SigningKey,
    Trust,
)
from webhooks.logview import LogView

TEMPLATES: Final = Path(__file__).parent / "templates"
SHORT_SHA: Final = 10


def commit_url(request: BuildRequest) -> str | None:
    """Return the commit's page on its forge, or None without a usable web URL."""
    base = _web_base(request)
    if base is None:
        return None
    if request.forge is Forge.GITLAB:
        return f"{base}/-/commit/{request.commit_sha}"
    return f"{base}/commit/{request.commit_sha}"


def change_url(request: BuildRequest) -> str | None:
    """Return the pull request's (merge request's) page, or None if not one."""
    base = _web_base(request)
    if base is None or request.kind is not RefKind.PULL_REQUEST or request.pr_number is None:
        return None
    if request.forge is Forge.GITLAB:
        return f"{base}/-/merge_requests/{request.pr_number}"
    return f"{base}/pull/{request.pr_number}"


def _web_base(request: BuildRequest) -> str | None:
    # web_url comes from the delivery: never let it become a javascript: link.
    url = request.web_url.rstrip("/")
    return url if url.startswith(("https://", "http://")) else None


def duration(record: BuildRecord, now: datetime) -> str:
    """Return how long the build ran (or has been running), as `1h02m`, `3m07s`, `9s`."""
    if record.started_at is None:
        return ""
    end = record.finished_at or now
    seconds = max(0, round((end - record.started_at).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def when(moment: datetime | None) -> str:
    """Return a UTC timestamp as `2025-03-01 12:00:05 UTC`, or "" for None."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: int) -> str:
    """Return a byte count for people: `812 B`, `4.2 KiB`, `1.1 GiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _row(record: BuildRecord, now: datetime) -> dict[str, Any]:
    request = record.request
    return {
        "id": record.id,
        "state": str(record.state),
        "forge": str(request.forge),
        "repo": request.repo,
        "ref": request.ref_name,
        "pr_number": request.pr_number,
        "sha": request.commit_sha[:SHORT_SHA],
        "started": when(record.started_at),
        "created": when(record.created_at),
        "duration": duration(record, now),
    }


def index_context(
    records: Sequence[BuildRecord],
    *,
    repo: str | None,
    state: BuildState | None,
    limit: int,
    now: datetime,
    signing_key: SigningKey | None = None,
) -> dict[str, Any]:
    """Return the template values of the build list page."""
    filters = {key: value for key, value in (("repo", repo), ("state", state)) if value}
    older = None
    if len(records) == limit and records:
        older = "/?" + urlencode({**filters, "before": records[-1].id})
    return {
        "rows": [_row(record, now) for record in records],
        "repo": repo or "",
        "state": str(state) if state else "",
        "states": [str(s) for s in BuildState],
        "older": older,
        "signing_key": signing_key,
    }


_RELEASE_NOTES: Final = {
    ReleaseState.QUEUED: "publishing starts in a moment",
    ReleaseState.PUBLISHING: "uploading to the forge now",
    ReleaseState.RETRYING: "the last attempt failed; it is tried again",
    ReleaseState.PUBLISHED: "",
    ReleaseState.REFUSED: "the forge refused it for good",
}


def release_context(release: Release | None) -> dict[str, Any] | None:
    """Return the template values of a build's release section, or None without one."""
    if release is None:
        return None
    # The URL comes from the forge's answer: only ever an http(s) link.
    url = release.url if release.url.startswith(("https://", "http://")) else ""
    return {
        "tag": release.tag,
        "state": str(release.state),
        "note": _RELEASE_NOTES[release.state],
        "url": url,
        "attempts": release.attempts,
        "next": when(release.next_attempt_at) if release.state is ReleaseState.RETRYING else "",
        "last_error": release.last_error,
        "updated": when(release.updated_at),
        "files": [
            {"name": f.name, "size_text": size(f.size), "uploaded": f.uploaded}
            for f in release.files
        ],
    }


def build_context(
    record: BuildRecord,
    artifacts: Sequence[Artifact],
    view: LogView,
    *,
    now: datetime,
    trust: Trust | None = None,
) -> dict[str, Any]:
    """Return the template values of a build's page (`trust`: its signature and rebuild check)."""
    request = record.request
    return {
        "record": record,
        "request": request,
        "row": _row(record, now),
        "finished": when(record.finished_at),
        "commit_url": commit_url(request),
        "change_url": change_url(request),
        "change_word": "merge request" if request.forge is Forge.GITLAB else "pull request",
        "artifacts": [
            {
                **vars_of(artifact),
                "size_text": size(artifact.size),
                "url": download_path(record.id, artifact.name, trusted=request.trusted),
            }
            for artifact in artifacts
        ],
        "log": view,
        "stream_url": f"/builds/{record.id}/log/stream?after={view.end}",
        "release": release_context(record.release),
        "boot_tests": [],
        "trust": trust,
        "packages": record.packages or (),
    }


def vars_of(artifact: Artifact) -> dict[str, Any]:
    """Return an artifact's fields as a dict."""
    return {
        "name": artifact.name,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "b2": artifact.b2,
    }


class Pages:
    """The page templates, loaded once; renders pages as text."""

    def __init__(self, templates: Path = TEMPLATES) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def index(self, context: Mapping[str, Any], *, nonce: str) -> str:
        """Render the build list."""
        return self._env.get_template("index.html").render(**context, nonce=nonce)

    def build_page(self, context: Mapping[str, Any], *, nonce: str) -> tuple[str, str]:
        """Render a build's page around its log: (before the log, after the log)."""
        slot = secrets.token_hex(16)  # unguessable, so no untrusted text can fake it
        html = self._env.get_template("build.html").render(
            **context,
            nonce=nonce,
            log_slot=Markup(slot),  # noqa: S704 - our random hex token
        )
        head, _, tail = html.partition(slot)
        return head, tail

    def error(self, status: int, message: str, *, nonce: str) -> str:
        """Render an error page."""
        return self._env.get_template("error.html").render(
            status=status, message=message, nonce=nonce
        )


def content_security_policy(nonce: str) -> str:
    """Return the pages' CSP: nothing but our own inline style/script and same-origin."""
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page_headers(nonce: str) -> dict[str, str]:
    """Return the headers of every HTML page: no caching, no sniffing, the CSP for `nonce`."""
    return {**_PAGE_HEADERS, "Content-Security-Policy": content_security_policy(nonce)}
