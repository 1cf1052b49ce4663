"""GitHub deliveries: verify, parse, filter and normalise them into build requests.

Pure: a function of the delivery's headers, its raw body, the configuration and the
time it was received; no Starlette, no httpx, no I/O. The signature is checked over
the raw bytes before anything is parsed. Payload models hold only the fields used.

Events (https://docs.github.com/webhooks/webhook-events-and-payloads):

- `push` to a configured branch builds `head_commit.id`; a tag matching
  `release_tags` builds `head_commit.id` too, because `after` is the tag object's SHA
  for annotated tags. Deletions are ignored.
- `pull_request` `opened`, `synchronize`, `reopened` build `pull_request.head.sha`;
  when the head repository differs from the base (or is gone) the request is a fork's
  and untrusted. Its payload carries no commit time, so `pull_request.updated_at`
  (the moment the head last moved, for these actions) stands in for it.
- `ping` and every other event are answered and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Final
from urllib.parse import parse_qs

from pydantic import AfterValidator, StringConstraints

from webhooks import bounds
from webhooks.build import BuildRequest, Forge, RefKind
from webhooks.config import Ignored, Outcome, WebhookConfig
from webhooks.exceptions import (
    ForgeNotConfigured,
    MalformedPayload,
    SignatureMismatch,
    UnsupportedEvent,
    UnsupportedMediaType,
)
from webhooks.payload import (
    Count,
    PayloadModel,
    Sha,
    lower_headers,
    parse_payload,
    previous_commit,
)
from webhooks.refs import ref_name_problem, repo_path_problem
from webhooks.verify import verify_github

JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
PR_BUILD_ACTIONS: Final = frozenset({"opened", "synchronize", "reopened"})
_MAX_ID_LENGTH: Final = 200
_MAX_EVENT_NAME: Final = 64


def _aware(value: datetime) -> datetime:
    # GitHub sends offsets (`Z` or the committer's `-07:00`); a bare time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_aware)]


class _Account(PayloadModel):
    login: str = ""


class _Repository(PayloadModel):
    full_name: Annotated[str, StringConstraints(min_length=1)]
    html_url: str = ""


class _HeadCommit(PayloadModel):
    id: Sha
    timestamp: Timestamp
    message: str = ""


class PushPayload(PayloadModel):
    """The fields of a `push` delivery that isorunner uses."""

    ref: str
    before: str | None = None
    deleted: bool = False
    head_commit: _HeadCommit | None = None
    repository: _Repository
    sender: _Account | None = None


class _HeadRef(PayloadModel):
    ref: str
    sha: Sha
    repo: _Repository | None = None  # null once the fork is deleted


class _BaseRef(PayloadModel):
    ref: str
    repo: _Repository


class _PullRequest(PayloadModel):
    number: Count
    title: str = ""
    updated_at: Timestamp
    head: _HeadRef
    base: _BaseRef


class PullRequestPayload(PayloadModel):
    """The fields of a `pull_request` delivery that isorunner uses."""

    action: str
    before: str | None = None  # `synchronize` only: the head before the new commits
    pull_request: _PullRequest
    sender: _Account | None = None


def _media_type(headers: Mapping[str, str]) -> str:
    content_type = headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    if media not in (JSON, FORM):
        raise UnsupportedMediaType(
            f"GitHub deliveries must be {JSON} or {FORM}; set the webhook's "
            "content type to application/json"
        )
    return media


def check_headers(headers: Mapping[str, str], config: WebhookConfig) -> None:
    """Refuse what the headers alone show, before the body is read.

    Args:
        headers: The delivery's headers (any case).
        config: The intake configuration.

    An unsigned delivery is refused here, before its body is read (the signature
    itself covers the body and is checked in `receive`).

    Raises:
        ForgeNotConfigured: No GitHub secret is configured.
        SignatureMismatch: No `X-Hub-Signature-256` header.
        UnsupportedMediaType: Neither JSON nor form-encoded.
    """
    if config.github_secret is None:
        raise ForgeNotConfigured("GitHub is not configured: set github.webhook_secret")
    headers = lower_headers(headers)
    if "x-hub-signature-256" not in headers:
        raise SignatureMismatch(
            "missing X-Hub-Signature-256: set a secret on the GitHub webhook "
            "(the SHA-1 X-Hub-Signature alone is not accepted)"
        )
    _media_type(headers)


def _json_bytes(body: bytes, media: str) -> bytes:
    if media == JSON:
        return body
    # Form deliveries carry the JSON in one `payload=` field; the signature covered
    # the form bytes, which were verified before this decoding.
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True, errors="strict")
    except ValueError as exc:  # includes UnicodeDecodeError
        raise MalformedPayload("form-encoded GitHub body is not valid") from exc
    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise MalformedPayload("form-encoded GitHub body must have one `payload` field")
    return payloads[0].encode()


def _delivery_id(headers: Mapping[str, str]) -> str:
    # X-GitHub-Delivery is per event and shared by all hooks; the hook id makes it
    # per delivery, and a redelivery keeps both.
    delivery = headers.get("x-github-delivery", "").strip()
    hook = headers.get("x-github-hook-id", "").strip()
    if not delivery:
        raise MalformedPayload("missing X-GitHub-Delivery header")
    delivery_id = f"{hook}:{delivery}" if hook else delivery
    if len(delivery_id) > _MAX_ID_LENGTH:
        raise MalformedPayload("X-GitHub-Delivery or X-GitHub-Hook-ID is too long")
    return delivery_id


def receive(
    headers: Mapping[str, str], body: bytes, config: WebhookConfig, *, received_at: datetime
) -> Outcome:
    """Verify a GitHub delivery and turn it into a build request or a reason to ignore it.

    Args:
        headers: The delivery's headers (any case).
        body: The raw body, exactly as received.
        config: The intake configuration (secret and repository rules).
        received_at: When the delivery arrived; unused by GitHub events, whose
            payloads all carry a time, and kept for symmetry with GitLab.

    Returns:
        A `BuildRequest` to store, or `Ignored` with the reason.

    Raises:
        ForgeNotConfigured: No GitHub secret is configured.
        UnsupportedMediaType: Neither JSON nor form-encoded.
        SignatureMismatch: `X-Hub-Signature-256` missing or wrong.
        UnsupportedEvent: No `X-GitHub-Event` header.
        MalformedPayload: The body or a required header cannot be read.
    """
    del received_at
    headers = lower_headers(headers)
    secret = config.github_secret
    if secret is None:
        raise ForgeNotConfigured("GitHub is not configured: set github.webhook_secret")
    media = _media_type(headers)
    verify_github(body, headers.get("x-hub-signature-256"), secret)

    event = headers.get("x-github-event", "").strip()
    if not event:
        raise UnsupportedEvent("missing X-GitHub-Event header: is this a GitHub webhook?")
    if event == "ping":
        return Ignored("ping: the webhook reaches isorunner")
    if event not in ("push", "pull_request"):
        return Ignored(f"{event[:_MAX_EVENT_NAME]!r} events do not start builds")
    data = _json_bytes(body, media)
    delivery_id = _delivery_id(headers)
    if event == "push":
        return _push(parse_payload(PushPayload, data, "GitHub push"), config, delivery_id)
    return _pull_request(
        parse_payload(PullRequestPayload, data, "GitHub pull_request"), config, delivery_id
    )


def _push(payload: PushPayload, config: WebhookConfig, delivery_id: str) -> Outcome:
    ref = payload.ref
    if payload.deleted:
        return Ignored(f"{bounds.quoted(ref)} was deleted")
    repo = payload.repository.full_name
    rule = config.rule_for(Forge.GITHUB, repo)
    if rule is None:
        return Ignored(f"repository {bounds.quoted(repo)} is not configured")
    kind = rule.classify_push(ref)
    if isinstance(kind, Ignored):
        return kind
    commit = payload.head_commit
    if commit is None:
        return Ignored(f"push to {bounds.quoted(ref)} names no head commit")
    return BuildRequest(
        forge=Forge.GITHUB,
        repo=repo,
        commit_sha=commit.id,
        ref=ref,
        kind=kind,
        pr_number=None,
        trusted=True,
        commit_time=commit.timestamp,
        delivery_id=delivery_id,
        source_repo=repo,
        web_url=bounds.url(payload.repository.html_url),
        title=bounds.title(commit.message),
        sender=bounds.cut(payload.sender.login, bounds.MAX_NAME) if payload.sender else "",
        previous_sha=previous_commit(payload.before),
    )


def _pull_request(payload: PullRequestPayload, config: WebhookConfig, delivery_id: str) -> Outcome:
    if payload.action not in PR_BUILD_ACTIONS:
        return Ignored(f"pull_request action {payload.action[:_MAX_EVENT_NAME]!r} does not build")
    pr = payload.pull_request
    base = pr.base.repo
    rule = config.rule_for(Forge.GITHUB, base.full_name)
    if rule is None:
        return Ignored(f"repository {bounds.quoted(base.full_name)} is not configured")
    if not rule.pull_requests:
        return Ignored(f"pull requests are not built for {base.full_name}")
    problem = ref_name_problem(pr.head.ref)
    if problem is not None:
        return Ignored(f"head branch {bounds.quoted(pr.head.ref)} {problem}: not a name git allows")
    head = pr.head.repo
    if head is not None and (problem := repo_path_problem(head.full_name)) is not None:
        return Ignored(f"head repository {bounds.quoted(head.full_name)} {problem}")
    # A fork is a head repository other than the base, not `head.repo.fork` (true for
    # any branch of a forked repository). A vanished head repository is a fork's; its
    # commit stays reachable from the base as refs/pull/<n>/head.
    trusted = head is not None and head.full_name.casefold() == base.full_name.casefold()
    return BuildRequest(
        forge=Forge.GITHUB,
        repo=base.full_name,
        commit_sha=pr.head.sha,
        ref=f"refs/heads/{pr.head.ref}",
        kind=RefKind.PULL_REQUEST,
        pr_number=pr.number,
        trusted=trusted,
        commit_time=pr.updated_at,
        delivery_id=delivery_id,
        source_repo=head.full_name if head is not None else base.full_name,
        web_url=bounds.url(base.html_url),
        title=bounds.title(pr.title),
        sender=bounds.cut(payload.sender.login, bounds.MAX_NAME) if payload.sender else "",
        previous_sha=previous_commit(payload.before),
    )
