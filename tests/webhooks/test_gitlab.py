"""Tests for webhooks.gitlab over GitLab's documented example deliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from tests.webhooks.samples import (
    GITLAB_SIGNING_KEY,
    GITLAB_TOKEN,
    edited,
    gitlab_signed,
    load,
)
from webhooks import gitlab
from webhooks.build import BuildRequest, Forge, RefKind
from webhooks.config import Ignored, Outcome, RepoRule, WebhookConfig
from webhooks.exceptions import (
    ForgeNotConfigured,
    MalformedPayload,
    SignatureMismatch,
    UnsupportedMediaType,
)

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = int(RECEIVED.timestamp())
RULES = (
    RepoRule(Forge.GITLAB, "mike/diaspora", branches=("master",)),
    RepoRule(Forge.GITLAB, "jsmith/example", release_tags=("v*",)),
    RepoRule(Forge.GITLAB, "Awesome_Space/Awesome_Project"),
)
BOTH = WebhookConfig(
    public_url="https://ci.example.org",
    repos=RULES,
    gitlab_token=SecretStr(GITLAB_TOKEN),
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
)
TOKEN_ONLY = WebhookConfig(
    public_url="https://ci.example.org", repos=RULES, gitlab_token=SecretStr(GITLAB_TOKEN)
)
SIGNING_ONLY = WebhookConfig(
    public_url="https://ci.example.org",
    repos=RULES,
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
)


def _receive(headers: dict[str, str], body: bytes, config: WebhookConfig = BOTH) -> Outcome:
    return gitlab.receive(headers, body, config, received_at=RECEIVED)


def _signed(case: str, body: bytes | None = None) -> tuple[dict[str, str], bytes]:
    return gitlab_signed(case, body, timestamp=NOW)


def _build(case: str, body: bytes | None = None) -> BuildRequest:
    outcome = _receive(*_signed(case, body))
    assert isinstance(outcome, BuildRequest), outcome
    return outcome


def _ignored(case: str, body: bytes | None = None) -> str:
    outcome = _receive(*_signed(case, body))
    assert isinstance(outcome, Ignored), outcome
    return outcome.reason


def test_receive_builds_branch_push_checkout_sha() -> None:
    """A push to a configured branch builds checkout_sha with the head commit's details."""
    headers, body = load("gitlab", "push")
    payload = json.loads(body)
    assert _build("push") == BuildRequest(
        forge=Forge.GITLAB,
        repo="mike/diaspora",
        commit_sha=payload["checkout_sha"],
        ref="refs/heads/master",
        kind=RefKind.BRANCH,
        pr_number=None,
        trusted=True,
        commit_time=datetime(2012, 1, 3, 21, 36, 29, tzinfo=UTC),
        delivery_id=headers["idempotency-key"],
        source_repo="mike/diaspora",
        project_id=15,
        web_url="http://example.com/mike/diaspora",
        title="fixed readme",
        sender="jsmith",
        previous_sha=payload["before"],
    )


def test_receive_keeps_commit_time_offset() -> None:
    """The push's commit time keeps the committer's offset."""
    assert _build("push").commit_time.utcoffset() == timedelta(hours=2)


def test_receive_uses_received_time_when_head_commit_unlisted() -> None:
    """Without the head commit in `commits`, the receipt time stands in for its time."""
    _, body = load("gitlab", "push")
    build = _build("push", edited(body, commits=[]))
    assert build.commit_time == RECEIVED
    assert build.title == ""


def test_receive_builds_tag_push_checkout_sha() -> None:
    """A tag push builds checkout_sha (the commit, also for annotated tags) as a tag."""
    _, body = load("gitlab", "tag_push")
    tag_object = "0123456789abcdef0123456789abcdef01234567"
    build = _build("tag_push", edited(body, after=tag_object))
    assert build.commit_sha == json.loads(body)["checkout_sha"]
    assert (build.kind, build.ref_name, build.project_id) == (RefKind.TAG, "v1.0.0", 1)
    assert build.commit_time == RECEIVED


def test_receive_ignores_deleted_tag() -> None:
    """A tag push with a null checkout_sha is a deletion and is ignored."""
    _, body = load("gitlab", "tag_push")
    assert "deleted" in _ignored("tag_push", edited(body, checkout_sha=None, after="0" * 40))


def test_receive_ignores_deleted_branch() -> None:
    """A push with a null checkout_sha is a branch deletion and is ignored."""
    _, body = load("gitlab", "push")
    assert "deleted" in _ignored("push", edited(body, checkout_sha=None))


def test_receive_ignores_unconfigured_branch() -> None:
    """A push to a branch outside `branches` is ignored."""
    _, body = load("gitlab", "push")
    assert "'develop'" in _ignored("push", edited(body, ref="refs/heads/develop"))


def test_receive_ignores_unconfigured_tag() -> None:
    """A tag outside `release_tags` is ignored."""
    _, body = load("gitlab", "tag_push")
    assert "release_tags" in _ignored("tag_push", edited(body, ref="refs/tags/nightly"))


def test_receive_ignores_unconfigured_project() -> None:
    """A push to a project without a rule is ignored."""
    _, body = load("gitlab", "push")
    changed = edited(body, project__path_with_namespace="mike/other")
    assert "not configured" in _ignored("push", changed)


def test_receive_builds_opened_merge_request() -> None:
    """An opened merge request builds last_commit.id as merge request IID."""
    payload = json.loads(load("gitlab", "merge_request_open")[1])
    mr = payload["object_attributes"]
    build = _build("merge_request_open")
    assert build.kind is RefKind.PULL_REQUEST
    assert build.commit_sha == mr["last_commit"]["id"]
    assert build.pr_number == mr["iid"]
    assert build.ref == "refs/heads/ms-viewport"
    assert build.repo == build.source_repo == "awesome_space/awesome_project"
    assert build.trusted is True
    assert build.project_id == mr["target_project_id"]
    assert build.commit_time == datetime.fromisoformat(mr["last_commit"]["timestamp"])
    assert (build.title, build.sender) == ("MS-Viewport", "root")


def test_receive_builds_reopened_merge_request() -> None:
    """A reopened merge request builds."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(body, object_attributes__action="reopen")
    assert _build("merge_request_open", changed).pr_number == 1


def test_receive_builds_merge_request_update_with_new_commits() -> None:
    """A merge request update carrying oldrev (new commits) builds."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(body, object_attributes__action="update", object_attributes__oldrev="a" * 40)
    build = _build("merge_request_open", changed)
    assert build.kind is RefKind.PULL_REQUEST
    assert build.previous_sha == "a" * 40  # the head before the new commits


def test_receive_ignores_merge_request_update_without_commits() -> None:
    """A merge request update without oldrev (a title or label edit) is ignored."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(body, object_attributes__action="update")
    assert "without new commits" in _ignored("merge_request_open", changed)


@pytest.mark.parametrize("action", ["close", "merge", "approved"])
def test_receive_ignores_other_merge_request_actions(action: str) -> None:
    """Merge request actions other than open, reopen and update do not build."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(body, object_attributes__action=action)
    assert f"{action!r}" in _ignored("merge_request_open", changed)


def test_receive_marks_fork_merge_request_untrusted() -> None:
    """A merge request from another project is untrusted and fetched from its source."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(
        body,
        object_attributes__source_project_id=99,
        object_attributes__source={"path_with_namespace": "forker/awesome_project"},
    )
    build = _build("merge_request_open", changed)
    assert build.trusted is False
    assert build.source_repo == "forker/awesome_project"
    assert build.repo == "awesome_space/awesome_project"


def test_receive_ignores_merge_requests_when_disabled() -> None:
    """A project with pull_requests=false builds no merge request."""
    config = WebhookConfig(
        public_url="https://ci.example.org",
        repos=(RepoRule(Forge.GITLAB, "awesome_space/awesome_project", pull_requests=False),),
        gitlab_token=SecretStr(GITLAB_TOKEN),
    )
    headers, body = gitlab_signed("merge_request_open", timestamp=NOW, key=None)
    outcome = _receive(headers, body, config)
    assert outcome == Ignored("merge requests are not built for awesome_space/awesome_project")


def test_receive_ignores_merge_request_into_unconfigured_project() -> None:
    """A merge request into a project without a rule is ignored."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(body, object_attributes__target={"path_with_namespace": "x/y"})
    assert "not configured" in _ignored("merge_request_open", changed)


def test_receive_ignores_pipeline_events() -> None:
    """Other object kinds (a recorded Pipeline Hook) are ignored, not refused."""
    assert _ignored("pipeline") == "'pipeline' events do not start builds"


def test_receive_ignores_body_without_object_kind() -> None:
    """A system hook event without object_kind is ignored."""
    assert "object_kind" in _ignored("push", b'{"event_name": "project_create"}')


def test_receive_accepts_token_only() -> None:
    """With only a secret token configured, the token alone authenticates."""
    outcome = _receive(*gitlab_signed("push", timestamp=NOW, key=None), config=TOKEN_ONLY)
    assert isinstance(outcome, BuildRequest)


def test_receive_accepts_signature_only() -> None:
    """With only a signing token configured, the signature alone authenticates."""
    outcome = _receive(*gitlab_signed("push", timestamp=NOW, token=None), config=SIGNING_ONLY)
    assert isinstance(outcome, BuildRequest)


def test_receive_requires_signature_when_signing_token_set() -> None:
    """Once a signing token is configured, a delivery with only the token is refused."""
    with pytest.raises(SignatureMismatch, match="webhook-signature"):
        _receive(*gitlab_signed("push", timestamp=NOW, key=None))


def test_receive_requires_token_when_token_set() -> None:
    """With both configured, a signed delivery without the token is refused."""
    with pytest.raises(SignatureMismatch, match="X-Gitlab-Token"):
        _receive(*gitlab_signed("push", timestamp=NOW, token=None))


def test_receive_refuses_wrong_token() -> None:
    """A wrong secret token is refused."""
    with pytest.raises(SignatureMismatch):
        _receive(*gitlab_signed("push", timestamp=NOW, token="wrong", key=None), TOKEN_ONLY)


@pytest.mark.parametrize("skew", [-301, 301])
def test_receive_refuses_signature_outside_replay_window(skew: int) -> None:
    """A signed delivery whose timestamp is outside the window either way is refused."""
    with pytest.raises(SignatureMismatch, match="more than 300 s"):
        _receive(*gitlab_signed("push", timestamp=NOW + skew))


def test_receive_refuses_body_changed_after_signing() -> None:
    """The signature covers the raw body: a changed body is refused before parsing."""
    headers, _ = _signed("push")
    with pytest.raises(SignatureMismatch):
        _receive(headers, b"{not json")


def test_receive_refuses_when_not_configured() -> None:
    """Without a token or a signing token, GitLab deliveries are refused."""
    unconfigured = WebhookConfig(public_url="https://ci.example.org", repos=RULES)
    with pytest.raises(ForgeNotConfigured, match="gitlab"):
        _receive(*_signed("push"), config=unconfigured)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", ""])
def test_receive_refuses_non_json(content_type: str) -> None:
    """GitLab always sends JSON; anything else is refused."""
    headers, body = _signed("push")
    with pytest.raises(UnsupportedMediaType):
        _receive({**headers, "content-type": content_type}, body)


@pytest.mark.parametrize("body", [b"{not json", b"[1]", b'{"object_kind": 3}', b"\xff"])
def test_receive_refuses_malformed_body(body: bytes) -> None:
    """Signed bodies that are not JSON objects with a string object_kind are malformed."""
    with pytest.raises(MalformedPayload):
        _receive(*_signed("push", body))


def test_receive_refuses_push_missing_fields() -> None:
    """A push body without its project is malformed, naming the field."""
    with pytest.raises(MalformedPayload, match="project"):
        _receive(*_signed("push", b'{"object_kind": "push", "ref": "refs/heads/master"}'))


def test_receive_reads_gitlab_utc_timestamps() -> None:
    """GitLab's `2017-09-15 16:50:55 UTC` timestamps parse as aware UTC times."""
    _, body = load("gitlab", "merge_request_open")
    changed = edited(
        body,
        object_attributes__last_commit={
            "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "timestamp": "2017-09-15 16:50:55 UTC",
        },
    )
    build = _build("merge_request_open", changed)
    assert build.commit_time == datetime(2017, 9, 15, 16, 50, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (("idempotency-key", "webhook-id", "x-gitlab-event-uuid"), "idempotency-key"),
        (("webhook-id", "x-gitlab-event-uuid"), "webhook-id"),
        (("x-gitlab-event-uuid",), "x-gitlab-event-uuid"),
    ],
)
def test_receive_delivery_id_prefers_idempotency_key(
    present: tuple[str, ...], expected: str
) -> None:
    """The delivery id is Idempotency-Key, else webhook-id, else X-Gitlab-Event-UUID."""
    headers, body = load("gitlab", "push")
    ids = {"idempotency-key": "key-1", "webhook-id": "hook-2", "x-gitlab-event-uuid": "uuid-3"}
    for name in ids:
        headers.pop(name, None)
    headers.update({name: ids[name] for name in present})
    headers["x-gitlab-token"] = GITLAB_TOKEN
    outcome = _receive(headers, body, TOKEN_ONLY)
    assert isinstance(outcome, BuildRequest)
    assert outcome.delivery_id == ids[expected]


def test_receive_refuses_delivery_without_any_id() -> None:
    """A delivery that cannot be deduplicated is refused."""
    headers, body = gitlab_signed("push", timestamp=NOW, key=None)
    for name in ("idempotency-key", "x-gitlab-event-uuid"):
        del headers[name]
    with pytest.raises(MalformedPayload, match="deduplicated"):
        _receive(headers, body, TOKEN_ONLY)


def test_receive_refuses_overlong_delivery_id() -> None:
    """An absurdly long Idempotency-Key is refused rather than stored."""
    headers, body = gitlab_signed("push", timestamp=NOW, key=None)
    with pytest.raises(MalformedPayload, match="too long"):
        _receive({**headers, "idempotency-key": "k" * 500}, body, TOKEN_ONLY)


def test_receive_titles_commit_by_message_first_line_without_title() -> None:
    """Without a commit title, the first line of the commit message is the title."""
    payload = json.loads(load("gitlab", "push")[1])
    head = {**payload["commits"][-1], "message": "first line\n\nbody"}
    del head["title"]
    changed = edited(load("gitlab", "push")[1], commits=[head])
    assert _build("push", changed).title == "first line"
