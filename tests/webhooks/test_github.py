"""Tests for webhooks.github over the recorded @octokit/webhooks-examples deliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import pytest
from pydantic import SecretStr

from tests.webhooks.samples import GITHUB_SECRET, edited, github_signature, github_signed, load
from webhooks import github
from webhooks.build import BuildRequest, Forge, RefKind
from webhooks.config import Ignored, Outcome, RepoRule, WebhookConfig
from webhooks.exceptions import (
    ForgeNotConfigured,
    MalformedPayload,
    SignatureMismatch,
    UnsupportedEvent,
    UnsupportedMediaType,
)

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULE = RepoRule(
    Forge.GITHUB, "codertocat/hello-world", branches=("master",), release_tags=("simple-*",)
)
CONFIG = WebhookConfig(
    public_url="https://ci.example.org",
    repos=(RULE,),
    github_secret=SecretStr(GITHUB_SECRET),
)


def _receive(headers: dict[str, str], body: bytes, config: WebhookConfig = CONFIG) -> Outcome:
    return github.receive(headers, body, config, received_at=RECEIVED)


def _build(case: str, body: bytes | None = None, config: WebhookConfig = CONFIG) -> BuildRequest:
    outcome = _receive(*github_signed(case, body), config=config)
    assert isinstance(outcome, BuildRequest), outcome
    return outcome


def _ignored(case: str, body: bytes | None = None, config: WebhookConfig = CONFIG) -> str:
    outcome = _receive(*github_signed(case, body), config=config)
    assert isinstance(outcome, Ignored), outcome
    return outcome.reason


def _payload(case: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(load("github", case)[1])
    return data


def test_receive_builds_branch_push_head_commit() -> None:
    """A push to a configured branch builds its head commit with its details."""
    headers, body = load("github", "push_branch")
    payload = json.loads(body)
    build = _build("push_branch")
    assert build == BuildRequest(
        forge=Forge.GITHUB,
        repo="Codertocat/Hello-World",
        commit_sha=payload["head_commit"]["id"],
        ref="refs/heads/master",
        kind=RefKind.BRANCH,
        pr_number=None,
        trusted=True,
        commit_time=datetime(2019, 5, 15, 15, 19, 25, tzinfo=UTC),
        delivery_id=f"{headers['x-github-hook-id']}:{headers['x-github-delivery']}",
        source_repo="Codertocat/Hello-World",
        web_url="https://github.com/Codertocat/Hello-World",
        title=payload["head_commit"]["message"].partition("\n")[0],
        sender="Codertocat",
    )


def test_receive_builds_tag_push_as_tag() -> None:
    """A pushed tag matching release_tags builds as a tag."""
    build = _build("push_tag")
    assert (build.kind, build.ref, build.ref_name) == (
        RefKind.TAG,
        "refs/tags/simple-tag",
        "simple-tag",
    )


def test_receive_builds_annotated_tag_commit_not_tag_object() -> None:
    """For an annotated tag the build is head_commit.id, not `after` (the tag object)."""
    _, body = load("github", "push_tag")
    tag_object = "0123456789abcdef0123456789abcdef01234567"
    build = _build("push_tag", edited(body, after=tag_object))
    assert build.commit_sha == json.loads(body)["head_commit"]["id"]
    assert build.commit_sha != tag_object


def test_receive_keeps_commit_time_offset() -> None:
    """The commit time keeps the committer's UTC offset."""
    _, body = load("github", "push_branch")
    build = _build("push_branch", edited(body, head_commit__timestamp="2019-05-15T08:19:25-07:00"))
    assert build.commit_time.utcoffset() == timedelta(hours=-7)
    assert build.commit_time == datetime(2019, 5, 15, 15, 19, 25, tzinfo=UTC)


def test_receive_reads_naive_commit_time_as_utc() -> None:
    """A commit time without an offset is taken as UTC, so it is always aware."""
    _, body = load("github", "push_branch")
    build = _build("push_branch", edited(body, head_commit__timestamp="2019-05-15T15:19:25"))
    assert build.commit_time == datetime(2019, 5, 15, 15, 19, 25, tzinfo=UTC)


def test_receive_reads_form_encoded_delivery() -> None:
    """A form-encoded `payload=` delivery, signed over the form bytes, builds the same."""
    headers, body = load("github", "push_branch")
    form = b"payload=" + quote_plus(body.decode()).encode()
    form_headers = {
        **headers,
        "content-type": "application/x-www-form-urlencoded",
        "x-hub-signature-256": github_signature(form),
    }
    assert _receive(form_headers, form) == _build("push_branch")


def test_receive_refuses_form_signature_over_decoded_json() -> None:
    """A form delivery signed over the decoded JSON instead of the raw form is refused."""
    headers, body = load("github", "push_branch")
    form = b"payload=" + quote_plus(body.decode()).encode()
    form_headers = {
        **headers,
        "content-type": "application/x-www-form-urlencoded",
        "x-hub-signature-256": github_signature(body),
    }
    with pytest.raises(SignatureMismatch):
        _receive(form_headers, form)


@pytest.mark.parametrize("case", ["ping", "ping_urlencoded"])
def test_receive_answers_ping(case: str) -> None:
    """A ping, JSON or form-encoded, is ignored with a reason saying it arrived."""
    assert _ignored(case).startswith("ping")


def test_receive_ignores_deleted_tag() -> None:
    """A tag deletion starts no build."""
    assert "deleted" in _ignored("push_tag_delete")


def test_receive_ignores_unconfigured_branch() -> None:
    """A push to a branch outside `branches` is ignored, naming the branch."""
    _, body = load("github", "push_branch")
    assert "'feature/x'" in _ignored("push_branch", edited(body, ref="refs/heads/feature/x"))


def test_receive_ignores_unconfigured_tag() -> None:
    """A tag outside `release_tags` is ignored."""
    _, body = load("github", "push_tag")
    assert "release_tags" in _ignored("push_tag", edited(body, ref="refs/tags/nightly"))


def test_receive_ignores_other_refs() -> None:
    """A ref that is neither a branch nor a tag is ignored."""
    _, body = load("github", "push_branch")
    assert "neither" in _ignored("push_branch", edited(body, ref="refs/notes/commits"))


def test_receive_ignores_unconfigured_repository() -> None:
    """A push to a repository without a rule is ignored."""
    other = WebhookConfig(
        public_url="https://ci.example.org",
        repos=(RepoRule(Forge.GITHUB, "someone/else", branches=("master",)),),
        github_secret=SecretStr(GITHUB_SECRET),
    )
    assert "not configured" in _ignored("push_branch", config=other)


def test_receive_ignores_gitlab_rule_of_same_name() -> None:
    """A rule for the same name on GitLab does not make a GitHub repository configured."""
    gitlab_only = WebhookConfig(
        public_url="https://ci.example.org",
        repos=(RepoRule(Forge.GITLAB, "Codertocat/Hello-World", branches=("master",)),),
        github_secret=SecretStr(GITHUB_SECRET),
    )
    assert "not configured" in _ignored("push_branch", config=gitlab_only)


def test_receive_ignores_push_without_head_commit() -> None:
    """A push that names no head commit cannot be built and is ignored."""
    _, body = load("github", "push_branch")
    assert "no head commit" in _ignored("push_branch", edited(body, head_commit=None))


def test_receive_ignores_events_it_does_not_build() -> None:
    """Events other than push, pull_request and ping are ignored, not refused."""
    headers, body = github_signed("push_branch")
    outcome = _receive({**headers, "x-github-event": "issues"}, body)
    assert outcome == Ignored("'issues' events do not start builds")


def test_receive_builds_pull_request_head() -> None:
    """An opened pull request builds its head commit, trusted, as pull request N."""
    payload = _payload("pull_request_opened")
    pr = payload["pull_request"]
    assert isinstance(pr, dict)
    build = _build("pull_request_opened")
    assert build.kind is RefKind.PULL_REQUEST
    assert build.commit_sha == pr["head"]["sha"]
    assert build.pr_number == pr["number"] == 2
    assert build.ref == f"refs/heads/{pr['head']['ref']}"
    assert build.trusted is True
    assert build.repo == build.source_repo == "Codertocat/Hello-World"
    assert build.title == pr["title"]
    assert build.commit_time == datetime.fromisoformat(pr["updated_at"])


def test_receive_builds_synchronized_pull_request() -> None:
    """A pull request whose head moved (synchronize) builds, remembering the old head."""
    _, body = load("github", "pull_request_synchronize")
    build = _build("pull_request_synchronize")
    assert build.kind is RefKind.PULL_REQUEST
    assert build.previous_sha == json.loads(body)["before"]


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ("0" * 40, None),  # the branch is new
        ("95790bf891e76fee5e1747ab589903a6a1f80f22", "95790bf891e76fee5e1747ab589903a6a1f80f22"),
        ("not-a-sha", None),  # unknown, not refused: it only orders builds
    ],
)
def test_receive_records_the_commit_a_push_moved_from(before: str, expected: str | None) -> None:
    """`before` becomes previous_sha when it names a commit."""
    _, body = load("github", "push_branch")
    assert _build("push_branch", edited(body, before=before)).previous_sha == expected


def test_receive_builds_reopened_pull_request() -> None:
    """A reopened pull request builds."""
    _, body = load("github", "pull_request_opened")
    assert _build("pull_request_opened", edited(body, action="reopened")).pr_number == 2


@pytest.mark.parametrize("action", ["closed", "labeled", "edited", "merged"])
def test_receive_ignores_other_pull_request_actions(action: str) -> None:
    """Pull request actions other than opened, synchronize and reopened do not build."""
    _, body = load("github", "pull_request_closed")
    assert f"{action!r}" in _ignored("pull_request_closed", edited(body, action=action))


def test_receive_ignores_recorded_closed_pull_request() -> None:
    """The recorded `closed` delivery is ignored."""
    assert "'closed'" in _ignored("pull_request_closed")


def test_receive_marks_fork_pull_request_untrusted() -> None:
    """A pull request from another repository is untrusted; the base receives statuses."""
    build = _build("pull_request_fork")
    assert build.trusted is False
    assert build.repo == "Codertocat/Hello-World"
    assert build.source_repo == "forker/Hello-World"


def test_receive_marks_pull_request_with_deleted_head_repo_untrusted() -> None:
    """A pull request whose head repository is gone is untrusted and fetched from the base."""
    _, body = load("github", "pull_request_fork")
    build = _build("pull_request_fork", edited(body, pull_request__head__repo=None))
    assert build.trusted is False
    assert build.source_repo == "Codertocat/Hello-World"


def test_receive_ignores_pull_requests_when_disabled() -> None:
    """A repository with pull_requests=false builds no pull request."""
    no_prs = WebhookConfig(
        public_url="https://ci.example.org",
        repos=(RepoRule(Forge.GITHUB, "Codertocat/Hello-World", pull_requests=False),),
        github_secret=SecretStr(GITHUB_SECRET),
    )
    assert "not built" in _ignored("pull_request_opened", config=no_prs)


def test_receive_ignores_pull_request_into_unconfigured_repository() -> None:
    """A pull request into a repository without a rule is ignored."""
    none = WebhookConfig(
        public_url="https://ci.example.org", repos=(), github_secret=SecretStr(GITHUB_SECRET)
    )
    assert "not configured" in _ignored("pull_request_opened", config=none)


def test_receive_delivery_id_without_hook_id_is_guid() -> None:
    """Without X-GitHub-Hook-ID the delivery GUID alone is the delivery id."""
    headers, body = github_signed("push_branch")
    del headers["x-github-hook-id"]
    outcome = _receive(headers, body)
    assert isinstance(outcome, BuildRequest)
    assert outcome.delivery_id == headers["x-github-delivery"]


def test_receive_accepts_mixed_case_headers() -> None:
    """Header names are matched case-insensitively."""
    headers, body = github_signed("push_branch")
    title_case = {name.title(): value for name, value in headers.items()}
    assert _receive(title_case, body) == _build("push_branch")


def test_receive_refuses_when_not_configured() -> None:
    """Without a GitHub secret every delivery is refused as not configured."""
    unconfigured = WebhookConfig(public_url="https://ci.example.org", repos=(RULE,))
    with pytest.raises(ForgeNotConfigured, match=r"github\.webhook_secret"):
        _receive(*github_signed("push_branch"), config=unconfigured)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "", "application/jsonx", "multipart/form-data"]
)
def test_receive_refuses_other_media_types(content_type: str) -> None:
    """Only JSON and form-encoded bodies are accepted."""
    headers, body = github_signed("push_branch")
    with pytest.raises(UnsupportedMediaType):
        _receive({**headers, "content-type": content_type}, body)


def test_receive_accepts_media_type_parameters() -> None:
    """A charset parameter and upper case in the media type are accepted."""
    headers, body = github_signed("push_branch")
    outcome = _receive({**headers, "content-type": "Application/JSON; charset=utf-8"}, body)
    assert isinstance(outcome, BuildRequest)


def test_receive_checks_signature_before_parsing() -> None:
    """An unsigned body that is not even JSON is refused for its signature, not its syntax."""
    headers, _ = load("github", "push_branch")
    with pytest.raises(SignatureMismatch):
        _receive(headers, b"{not json")


def test_receive_refuses_wrong_secret() -> None:
    """A delivery signed with another secret is refused."""
    with pytest.raises(SignatureMismatch):
        _receive(*github_signed("push_branch", secret="not-the-secret"))


def test_receive_refuses_missing_event_header() -> None:
    """A signed delivery without X-GitHub-Event cannot be dispatched."""
    headers, body = github_signed("push_branch")
    del headers["x-github-event"]
    with pytest.raises(UnsupportedEvent):
        _receive(headers, body)


def test_receive_refuses_missing_delivery_id() -> None:
    """A build cannot be deduplicated without X-GitHub-Delivery, so it is refused."""
    headers, body = github_signed("push_branch")
    del headers["x-github-delivery"]
    with pytest.raises(MalformedPayload, match="X-GitHub-Delivery"):
        _receive(headers, body)


def test_receive_refuses_overlong_delivery_id() -> None:
    """An absurdly long delivery id is refused rather than stored."""
    headers, body = github_signed("push_branch")
    with pytest.raises(MalformedPayload, match="too long"):
        _receive({**headers, "x-github-delivery": "x" * 500}, body)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"ref": "refs/heads/master"}', b"\xff\xfe", b""],
)
def test_receive_refuses_malformed_push(body: bytes) -> None:
    """Signed bodies that are not push payloads are refused as malformed."""
    with pytest.raises(MalformedPayload, match="GitHub push payload"):
        _receive(*github_signed("push_branch", body))


def test_receive_refuses_non_hex_commit() -> None:
    """A head commit id that is not a hex SHA is refused (it would reach URLs)."""
    _, body = load("github", "push_branch")
    with pytest.raises(MalformedPayload, match=r"head_commit\.id"):
        _receive(*github_signed("push_branch", edited(body, head_commit__id="../../etc")))


@pytest.mark.parametrize(
    "form", [b"payload=%7B&payload=%7D", b"other=1", b"payload=%ff", b"\xff=1", b"a"]
)
def test_receive_refuses_malformed_form(form: bytes) -> None:
    """A form body without exactly one decodable `payload` field is refused."""
    headers, _ = load("github", "ping_urlencoded")
    headers = {**headers, "x-github-event": "push", "x-hub-signature-256": github_signature(form)}
    with pytest.raises(MalformedPayload, match="form-encoded"):
        _receive(headers, form)


def test_check_headers_refuses_before_body() -> None:
    """The header-only check refuses an unconfigured forge, no signature, a wrong media type."""
    unconfigured = WebhookConfig(public_url="https://ci.example.org", repos=())
    signed = {"X-Hub-Signature-256": "sha256=00"}
    with pytest.raises(ForgeNotConfigured):
        github.check_headers({"content-type": "application/json"}, unconfigured)
    with pytest.raises(SignatureMismatch, match="missing X-Hub-Signature-256"):
        github.check_headers({"Content-Type": "application/json"}, CONFIG)
    with pytest.raises(UnsupportedMediaType):
        github.check_headers({"Content-Type": "text/xml", **signed}, CONFIG)
    github.check_headers({"Content-Type": "application/json", **signed}, CONFIG)
