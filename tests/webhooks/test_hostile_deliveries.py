"""Hostile deliveries to both intakes: names a forge would refuse, huge texts, huge numbers.

Each delivery is a recorded one, edited the way a user who may push (or a sender who
holds the secret) could, then signed. What comes out is either `Ignored` with a reason
of bounded length, or a `BuildRequest` whose every text is bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from tests.webhooks.samples import (
    GITHUB_SECRET,
    GITLAB_SIGNING_KEY,
    GITLAB_TOKEN,
    edited,
    github_signed,
    gitlab_signed,
    load,
)
from webhooks import bounds, github, gitlab
from webhooks.build import BuildRequest, Forge
from webhooks.config import Ignored, Outcome, RepoRule, WebhookConfig
from webhooks.exceptions import MalformedPayload

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOSTILE_TAG = "v" + "1" * 40 + "!"
BIG = 20 * 1024 * 1024  # one line of 20 MiB: within the 25 MiB body cap
CONFIG = WebhookConfig(
    public_url="https://ci.example.org",
    repos=(
        RepoRule(Forge.GITHUB, "codertocat/hello-world", branches=("*",), release_tags=("*",)),
        RepoRule(Forge.GITLAB, "mike/diaspora", branches=("*",)),
        RepoRule(Forge.GITLAB, "jsmith/example", release_tags=("v*",)),
        RepoRule(Forge.GITLAB, "awesome_space/awesome_project"),
    ),
    github_secret=SecretStr(GITHUB_SECRET),
    gitlab_token=SecretStr(GITLAB_TOKEN),
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
)


def _github(case: str, **changes: object) -> Outcome:
    body = edited(load("github", case)[1], **changes)
    return github.receive(*github_signed(case, body), CONFIG, received_at=RECEIVED)


def _gitlab(case: str, **changes: object) -> Outcome:
    body = edited(load("gitlab", case)[1], **changes)
    headers, body = gitlab_signed(case, body, timestamp=int(RECEIVED.timestamp()))
    return gitlab.receive(headers, body, CONFIG, received_at=RECEIVED)


def _reason(outcome: Outcome) -> str:
    assert isinstance(outcome, Ignored), outcome
    assert len(outcome.reason) <= bounds.MAX_REASON
    return outcome.reason


def _build(outcome: Outcome) -> BuildRequest:
    assert isinstance(outcome, BuildRequest), outcome
    return outcome


def test_gitlab_tag_that_gitlab_cannot_release_is_ignored_at_intake() -> None:
    """The tag that froze the service is ignored on arrival, saying why, before any build."""
    reason = _reason(_gitlab("tag_push", ref=f"refs/tags/{HOSTILE_TAG}"))
    assert "cannot be released on GitLab" in reason
    assert "letters, digits" in reason
    assert HOSTILE_TAG in reason


def test_github_takes_the_same_tag_which_github_can_release() -> None:
    """GitHub releases carry any tag git allows, so GitHub builds it."""
    build = _build(_github("push_tag", ref=f"refs/tags/{HOSTILE_TAG}"))
    assert build.ref_name == HOSTILE_TAG


@pytest.mark.parametrize(
    "name",
    ["a" * 256, "esc\x1b]0;pwned\x07", "bad..name", "x" * BIG],
    ids=["long", "escape", "dots", "huge"],
)
def test_pushes_of_names_git_refuses_are_ignored(name: str) -> None:
    """A branch or tag name git would refuse is ignored, quoted in at most 100 characters."""
    for outcome in (
        _github("push_branch", ref=f"refs/heads/{name}"),
        _github("push_tag", ref=f"refs/tags/{name}"),
        _gitlab("push", ref=f"refs/heads/{name}"),
    ):
        assert "not a name git allows" in _reason(outcome)


def test_pull_request_head_branch_git_refuses_is_ignored() -> None:
    """A pull or merge request whose head branch git would refuse builds nothing."""
    assert "head branch" in _reason(_github("pull_request_opened", pull_request__head__ref="a b"))
    mr = _gitlab("merge_request_open", object_attributes__source_branch="x" * 300)
    assert "source branch" in _reason(mr)


def test_fork_with_an_unusable_repository_path_is_ignored() -> None:
    """A head repository or source project path with spaces or 2,000 characters is refused."""
    github_fork = _github("pull_request_opened", pull_request__head__repo__full_name="a/b c")
    assert "head repository" in _reason(github_fork)
    gitlab_fork = _gitlab(
        "merge_request_open", object_attributes__source__path_with_namespace="a/" + "b" * 2000
    )
    assert "source project" in _reason(gitlab_fork)


def test_unconfigured_repository_of_a_huge_name_is_quoted_briefly() -> None:
    """An unconfigured repository named with 20 MiB is ignored with a short reason."""
    assert "is not configured" in _reason(_github("push_branch", repository__full_name="a" * BIG))
    assert "is not configured" in _reason(
        _gitlab("push", project__path_with_namespace="a/" + "b" * BIG)
    )


def test_huge_single_line_commit_message_makes_a_bounded_title() -> None:
    """A 20 MiB one-line commit message becomes a title of 1,000 characters marked as cut."""
    build = _build(_github("push_branch", head_commit__message="m" * BIG))
    assert build.title == "m" * (bounds.MAX_TITLE - 1) + bounds.CUT
    gitlab_build = _build(
        _gitlab(
            "push",
            commits=[
                {
                    "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",  # checkout_sha
                    "message": "m" * BIG,
                    "title": "",
                    "timestamp": "2012-01-03T23:36:29+02:00",
                }
            ],
        )
    )
    assert gitlab_build.title == "m" * (bounds.MAX_TITLE - 1) + bounds.CUT


def test_huge_titles_senders_and_urls_are_bounded() -> None:
    """Pull/merge request titles, senders and web URLs from a payload are all bounded."""
    pr = _build(
        _github(
            "pull_request_opened",
            pull_request__title="t" * BIG,
            sender__login="s" * 10_000,
            pull_request__base__repo__html_url="https://x/" + "u" * 10_000,
        )
    )
    assert len(pr.title) == bounds.MAX_TITLE
    assert pr.sender == "s" * (bounds.MAX_NAME - 1) + bounds.CUT
    assert pr.web_url == ""
    mr = _build(
        _gitlab(
            "merge_request_open",
            object_attributes__title="t" * BIG,
            user__username="u" * 10_000,
            object_attributes__target__web_url="javascript:alert(1)",
        )
    )
    assert len(mr.title) == bounds.MAX_TITLE
    assert len(mr.sender) == bounds.MAX_NAME
    assert mr.web_url == ""


def test_numbers_past_the_stores_range_are_refused() -> None:
    """A PR number or project id past 2**63 - 1 is a malformed payload, not a store failure."""
    with pytest.raises(MalformedPayload, match="number"):
        _github("pull_request_opened", pull_request__number=2**64)
    with pytest.raises(MalformedPayload, match="iid"):
        _gitlab("merge_request_open", object_attributes__iid=2**63)
    with pytest.raises(MalformedPayload, match=r"project\.id"):
        _gitlab("push", project__id=-1)


def test_gitlab_signed_delivery_is_known_by_its_signed_webhook_id() -> None:
    """A replay of a signed delivery under a fresh Idempotency-Key keeps its signed id."""
    headers, body = gitlab_signed("push", timestamp=int(RECEIVED.timestamp()))
    headers["idempotency-key"] = "a-fresh-key-chosen-by-a-replayer"
    build = _build(gitlab.receive(headers, body, CONFIG, received_at=RECEIVED))
    assert build.delivery_id == headers["webhook-id"]


def test_gitlab_unsigned_delivery_is_known_by_its_idempotency_key() -> None:
    """Without a signing token, the Idempotency-Key names the delivery, as GitLab intends."""
    token_only = WebhookConfig(
        public_url="https://ci.example.org",
        repos=CONFIG.repos,
        gitlab_token=SecretStr(GITLAB_TOKEN),
    )
    headers, body = gitlab_signed("push", timestamp=int(RECEIVED.timestamp()), key=None)
    headers["webhook-id"] = "an-unsigned-webhook-id"
    build = _build(gitlab.receive(headers, body, token_only, received_at=RECEIVED))
    assert build.delivery_id == headers["idempotency-key"]
