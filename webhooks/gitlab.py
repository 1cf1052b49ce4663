"""GitLab deliveries: verify, parse, filter and normalise them into build requests.

Pure: a function of the delivery's headers, its raw body, the configuration and the
time it was received; no Starlette, no httpx, no I/O. Authentication runs over the raw
bytes before anything is parsed: the secret token (`X-Gitlab-Token`) when configured,
and the Standard Webhooks signature when a signing token is configured (both when
both are). Dispatch is on the body's `object_kind`, not `X-Gitlab-Event`, which
system hooks set to `System Hook` for every event.

Events (https://docs.gitlab.com/user/project/integrations/webhook_events/):

- `push` to a configured branch and `tag_push` of a tag matching `release_tags` build
  `checkout_sha` (the dereferenced commit, also for annotated tags); a null
  `checkout_sha` is a deletion and is ignored.
- `merge_request` `open`, `reopen`, and `update` with `oldrev` (new commits; an
  update without it is a title or label edit) build `last_commit.id`; a source
  project other than the target is a fork and untrusted.
- Everything else is answered and ignored.

Commit time: GitLab sends the commit's timestamp with merge requests and in a push's
`commits` list; a tag push (whose `commits` is empty) or a push whose head commit is
not listed carries none, and the time the delivery was received stands in for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BeforeValidator,
    StringConstraints,
)

from webhooks import bounds
from webhooks.build import BuildRequest, Forge, RefKind
from webhooks.config import Ignored, Outcome, WebhookConfig
from webhooks.exceptions import ForgeNotConfigured, MalformedPayload, UnsupportedMediaType
from webhooks.payload import (
    Count,
    PayloadModel,
    Sha,
    lower_headers,
    parse_payload,
    previous_commit,
)
from webhooks.refs import package_version_problem, ref_name_problem, repo_path_problem
from webhooks.verify import (
    require_standard_webhook_headers,
    verify_gitlab_token,
    verify_standard_webhook,
)

JSON: Final = "application/json"
MR_BUILD_ACTIONS: Final = frozenset({"open", "reopen", "update"})
_MAX_ID_LENGTH: Final = 200
_MAX_NAME: Final = 64


def _utc_suffix(value: Any) -> Any:
    # GitLab mixes ISO 8601 with "2017-09-15 16:50:55 UTC" in one payload.
    if isinstance(value, str) and value.endswith(" UTC"):
        return value.removesuffix(" UTC") + "Z"
    return value


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, BeforeValidator(_utc_suffix), AfterValidator(_aware)]
Path = Annotated[str, StringConstraints(min_length=1)]


class _Envelope(PayloadModel):
    object_kind: str | None = None


class _Project(PayloadModel):
    id: Count
    path_with_namespace: Path
    web_url: str = ""


class _Commit(PayloadModel):
    id: str
    timestamp: Timestamp | None = None
    title: str = ""
    message: str = ""


class PushPayload(PayloadModel):
    """The fields of a Push Hook or Tag Push Hook delivery that isorunner uses."""

    ref: str
    before: str | None = None
    checkout_sha: Sha | None = None
    project: _Project
    commits: tuple[_Commit, ...] = ()
    user_username: str = ""


class _MRProject(PayloadModel):
    path_with_namespace: Path
    web_url: str = ""


class _LastCommit(PayloadModel):
    id: Sha
    timestamp: Timestamp
    title: str = ""
    message: str = ""


class _MergeRequest(PayloadModel):
    iid: Count
    action: str = ""
    oldrev: str | None = None
    title: str = ""
    source_branch: str
    source_project_id: Count
    target_project_id: Count
    source: _MRProject
    target: _MRProject
    last_commit: _LastCommit


class _User(PayloadModel):
    username: str = ""


class MergeRequestPayload(PayloadModel):
    """The fields of a Merge Request Hook delivery that isorunner uses."""

    object_attributes: _MergeRequest
    user: _User | None = None


def check_headers(headers: Mapping[str, str], config: WebhookConfig) -> None:
    """Refuse what the headers alone show, before the body is read.

    Args:
        headers: The delivery's headers (any case).
        config: The intake configuration.

    The secret token is a header-only credential: a delivery without the right one is
    refused here, before a byte of its body is read. With a signing token, a delivery
    lacking the signature headers is refused here too (the signature itself covers the
    body and is checked in `receive`).

    Raises:
        ForgeNotConfigured: Neither a GitLab secret token nor a signing token is set.
        SignatureMismatch: The secret token is missing or wrong, or the signature
            headers are missing.
        UnsupportedMediaType: The body is not declared as JSON.
    """
    if not config.gitlab_configured:
        raise ForgeNotConfigured(
            "GitLab is not configured: set gitlab.webhook_secret or gitlab.signing_token"
        )
    headers = lower_headers(headers)
    if config.gitlab_token is not None:
        verify_gitlab_token(headers.get("x-gitlab-token"), config.gitlab_token)
    if config.gitlab_signing_token is not None:
        require_standard_webhook_headers(
            headers.get("webhook-id"),
            headers.get("webhook-timestamp"),
            headers.get("webhook-signature"),
        )
    content_type = headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != JSON:
        raise UnsupportedMediaType(f"GitLab deliveries must be {JSON}")


def _authenticate(
    headers: Mapping[str, str], body: bytes, config: WebhookConfig, now: float
) -> None:
    if config.gitlab_signing_token is not None:
        # Chosen by configuration, not by the presence of `webhook-signature`: once a
        # signing token is set, an unsigned delivery is refused.
        verify_standard_webhook(
            body,
            webhook_id=headers.get("webhook-id"),
            webhook_timestamp=headers.get("webhook-timestamp"),
            webhook_signature=headers.get("webhook-signature"),
            key=config.gitlab_signing_token,
            now=now,
            tolerance=config.signature_tolerance_seconds,
        )
    if config.gitlab_token is not None:
        verify_gitlab_token(headers.get("x-gitlab-token"), config.gitlab_token)


def _delivery_id(headers: Mapping[str, str], *, signed: bool) -> str:
    # Idempotency-Key (17.4+) survives retries and "Resend Request"; webhook-id is the
    # same value, and when the delivery is signed it is covered by the signature: it
    # wins, or a captured signed delivery could be replayed within the time window
    # under a fresh (unsigned) Idempotency-Key. X-Gitlab-Event-UUID is per event on
    # older GitLab. Not X-Gitlab-Webhook-UUID, which is fresh on every request.
    names = ("webhook-id",) if signed else ("idempotency-key", "webhook-id", "x-gitlab-event-uuid")
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            if len(value) > _MAX_ID_LENGTH:
                raise MalformedPayload(f"the {name} header is too long")
            return value
    raise MalformedPayload(
        "missing Idempotency-Key, webhook-id and X-Gitlab-Event-UUID: "
        "the delivery cannot be deduplicated"
    )


def receive(
    headers: Mapping[str, str], body: bytes, config: WebhookConfig, *, received_at: datetime
) -> Outcome:
    """Verify a GitLab delivery and turn it into a build request or a reason to ignore it.

    Args:
        headers: The delivery's headers (any case).
        body: The raw body, exactly as received.
        config: The intake configuration (secrets, repository rules, replay window).
        received_at: When the delivery arrived (timezone-aware): the clock for the
            replay window, and the commit time when the payload has none.

    Returns:
        A `BuildRequest` to store, or `Ignored` with the reason.

    Raises:
        ForgeNotConfigured: No GitLab secret is configured.
        UnsupportedMediaType: The body is not declared as JSON.
        SignatureMismatch: Token or signature missing, wrong, or outside the window.
        MalformedPayload: The body or a required header cannot be read.
    """
    check_headers(headers, config)
    headers = lower_headers(headers)
    _authenticate(headers, body, config, received_at.timestamp())

    signed = config.gitlab_signing_token is not None
    kind = parse_payload(_Envelope, body, "GitLab webhook").object_kind
    if kind in ("push", "tag_push"):
        payload = parse_payload(PushPayload, body, f"GitLab {kind}")
        return _push(payload, config, _delivery_id(headers, signed=signed), received_at)
    if kind == "merge_request":
        mr = parse_payload(MergeRequestPayload, body, f"GitLab {kind}")
        return _merge_request(mr, config, _delivery_id(headers, signed=signed))
    if kind is None:
        return Ignored("the delivery has no object_kind (a system hook event?)")
    return Ignored(f"{kind[:_MAX_NAME]!r} events do not start builds")


def _push(
    payload: PushPayload, config: WebhookConfig, delivery_id: str, received_at: datetime
) -> Outcome:
    ref = payload.ref
    sha = payload.checkout_sha
    if sha is None:
        return Ignored(f"{bounds.quoted(ref)} was deleted")
    repo = payload.project.path_with_namespace
    rule = config.rule_for(Forge.GITLAB, repo)
    if rule is None:
        return Ignored(f"project {bounds.quoted(repo)} is not configured")
    kind = rule.classify_push(ref)
    if isinstance(kind, Ignored):
        return kind
    tag = ref.removeprefix("refs/tags/")
    if kind is RefKind.TAG and (problem := package_version_problem(tag)) is not None:
        # The release goes to the generic package registry under the tag's name:
        # refuse now what GitLab would refuse after the build (forge-apis.md §6.2).
        return Ignored(
            f"tag {bounds.quoted(tag)} cannot be released on GitLab: a generic package "
            f"version {problem}; push a tag such as v1.2.3"
        )
    head = next((commit for commit in payload.commits if commit.id == sha), None)
    commit_time = head.timestamp if head is not None and head.timestamp else None
    return BuildRequest(
        forge=Forge.GITLAB,
        repo=repo,
        commit_sha=sha,
        ref=ref,
        kind=kind,
        pr_number=None,
        trusted=True,
        commit_time=commit_time or _aware(received_at),
        delivery_id=delivery_id,
        source_repo=repo,
        project_id=payload.project.id,
        web_url=bounds.url(payload.project.web_url),
        title=bounds.title(head.title or head.message) if head is not None else "",
        sender=bounds.cut(payload.user_username, bounds.MAX_NAME),
        previous_sha=previous_commit(payload.before),
    )


def _unusable_source(mr: _MergeRequest) -> Ignored | None:
    """Why a merge request's source branch or project cannot be taken, or None."""
    problem = ref_name_problem(mr.source_branch)
    if problem is not None:
        return Ignored(
            f"source branch {bounds.quoted(mr.source_branch)} {problem}: not a name git allows"
        )
    source = mr.source.path_with_namespace
    if (problem := repo_path_problem(source)) is not None:
        return Ignored(f"source project {bounds.quoted(source)} {problem}")
    return None


def _merge_request(
    payload: MergeRequestPayload, config: WebhookConfig, delivery_id: str
) -> Outcome:
    mr = payload.object_attributes
    if mr.action not in MR_BUILD_ACTIONS:
        return Ignored(f"merge request action {mr.action[:_MAX_NAME]!r} does not build")
    if mr.action == "update" and not mr.oldrev:
        return Ignored("merge request update without new commits")
    repo = mr.target.path_with_namespace
    rule = config.rule_for(Forge.GITLAB, repo)
    if rule is None:
        return Ignored(f"project {bounds.quoted(repo)} is not configured")
    if not rule.pull_requests:
        return Ignored(f"merge requests are not built for {repo}")
    refused = _unusable_source(mr)
    if refused is not None:
        return refused
    return BuildRequest(
        forge=Forge.GITLAB,
        repo=repo,
        commit_sha=mr.last_commit.id,
        ref=f"refs/heads/{mr.source_branch}",
        kind=RefKind.PULL_REQUEST,
        pr_number=mr.iid,
        trusted=mr.source_project_id == mr.target_project_id,
        commit_time=mr.last_commit.timestamp,
        delivery_id=delivery_id,
        source_repo=mr.source.path_with_namespace,
        project_id=mr.target_project_id,
        web_url=bounds.url(mr.target.web_url),
        title=bounds.title(mr.title),
        sender=bounds.cut(payload.user.username, bounds.MAX_NAME) if payload.user else "",
        previous_sha=previous_commit(mr.oldrev),
    )
