"""What the webhook intake accepts: configuration, repository rules, `Ignored`, `Receiver`.

Pure: frozen values and the functions that decide from them, no I/O. The runner
builds a `WebhookConfig` from its Settings and passes it to `create_app`; nothing here
reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Protocol

from pydantic import SecretStr

from webhooks import bounds
from webhooks.build import BuildRequest, Forge, RefKind
from webhooks.refs import ref_name_problem
from webhooks.verify import decode_signing_key

MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub and GitLab both cap webhook payloads at 25 MB; larger bodies are not theirs."""

MAX_BODIES_IN_FLIGHT_BYTES = 64 * 1024 * 1024
"""All bodies being received at once: two of the largest, or thousands of ordinary ones."""


@dataclass(frozen=True, slots=True)
class RepoRule:
    """One repository to build and which of its refs trigger a build.

    Attributes:
        forge: The forge hosting the repository.
        name: `owner/repo` on GitHub, the full project path on GitLab. Compared
            case-insensitively (GitHub names are case-insensitive).
        branches: `fnmatch` globs for branches whose pushes are built. Matching is
            case-sensitive, and `*` also matches `/` (`release/*` covers `release/a/b`).
        release_tags: `fnmatch` globs for tags that are built and released.
        pull_requests: Whether pull/merge requests into the repository are built.
    """

    forge: Forge
    name: str
    branches: tuple[str, ...] = ("main",)
    release_tags: tuple[str, ...] = ("v*",)
    pull_requests: bool = True

    def builds_branch(self, branch: str) -> bool:
        """Whether a push to `branch` (short name) is built."""
        return any(fnmatchcase(branch, pattern) for pattern in self.branches)

    def builds_tag(self, tag: str) -> bool:
        """Whether a push of `tag` (short name) is built."""
        return any(fnmatchcase(tag, pattern) for pattern in self.release_tags)

    def classify_push(self, ref: str) -> RefKind | Ignored:
        """Say what a push of the full `ref` builds, or why it builds nothing.

        Args:
            ref: The pushed ref, `refs/heads/<branch>` or `refs/tags/<tag>`.

        Returns:
            `RefKind.BRANCH` or `RefKind.TAG` when the rule builds it, else `Ignored`;
            also for a name git would refuse (`webhooks.refs`), before any glob sees it.
        """
        if ref.startswith("refs/heads/"):
            what, name = "branch", ref.removeprefix("refs/heads/")
        elif ref.startswith("refs/tags/"):
            what, name = "tag", ref.removeprefix("refs/tags/")
        else:
            return Ignored(f"{bounds.quoted(ref)} is neither a branch nor a tag")
        problem = ref_name_problem(name)
        if problem is not None:
            return Ignored(f"{what} {bounds.quoted(name)} {problem}: not a name git allows")
        if what == "branch":
            if self.builds_branch(name):
                return RefKind.BRANCH
            return Ignored(f"branch {name!r} of {self.name} does not match its branches")
        if self.builds_tag(name):
            return RefKind.TAG
        return Ignored(f"tag {name!r} of {self.name} does not match its release_tags")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Everything the intake app needs: secrets, repository rules, limits.

    Attributes:
        public_url: Base URL of this service as the forges reach it; build links are
            `public_url + "/builds/<id>"`.
        repos: The repositories to build.
        github_secret: The GitHub webhook secret; None disables `/webhooks/github`
            (it answers 404).
        gitlab_token: The GitLab secret token (`X-Gitlab-Token`); when set it is
            required on every GitLab delivery.
        gitlab_signing_token: The GitLab signing token (`whsec_...`, Standard
            Webhooks); when set, a valid `webhook-signature` is required. With neither
            GitLab secret set, `/webhooks/gitlab` answers 404.
        max_body_bytes: Bodies over this size are refused with 413.
        max_bodies_in_flight_bytes: The bytes all bodies being received at once may
            hold; past it a delivery is answered 503 with Retry-After, unread.
        body_seconds: How long a body may take to arrive before the delivery is
            answered 408.
        signature_tolerance_seconds: How far a signed `webhook-timestamp` may be from
            now, in either direction, before the delivery is refused as a replay.
    """

    public_url: str
    repos: tuple[RepoRule, ...]
    github_secret: SecretStr | None = None
    gitlab_token: SecretStr | None = None
    gitlab_signing_token: SecretStr | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_bodies_in_flight_bytes: int = MAX_BODIES_IN_FLIGHT_BYTES
    body_seconds: float = 30.0
    signature_tolerance_seconds: int = 300

    def __post_init__(self) -> None:
        """Refuse a configuration that would accept forged or unsigned deliveries.

        Raises:
            ValueError: An empty secret, an undecodable signing token, or a
                non-positive limit. Messages name the setting, never its value.
        """
        for setting, secret in (
            ("github.webhook_secret", self.github_secret),
            ("gitlab.webhook_secret", self.gitlab_token),
            ("gitlab.signing_token", self.gitlab_signing_token),
        ):
            if secret is not None and not secret.get_secret_value():
                raise ValueError(f"{setting} is empty: set it, or leave it out entirely")
        if self.gitlab_signing_token is not None:
            decode_signing_key(self.gitlab_signing_token)
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if self.max_bodies_in_flight_bytes < self.max_body_bytes:
            raise ValueError("max_bodies_in_flight_bytes must be at least max_body_bytes")
        if self.body_seconds <= 0:
            raise ValueError("body_seconds must be positive")
        if self.signature_tolerance_seconds < 0:
            raise ValueError("signature_tolerance_seconds must not be negative")

    @property
    def gitlab_configured(self) -> bool:
        """Whether GitLab deliveries can be authenticated at all."""
        return self.gitlab_token is not None or self.gitlab_signing_token is not None

    def rule_for(self, forge: Forge, repo: str) -> RepoRule | None:
        """Return the rule for `repo` on `forge`, compared case-insensitively, or None."""
        wanted = repo.casefold()
        for rule in self.repos:
            if rule.forge is forge and rule.name.casefold() == wanted:
                return rule
        return None

    def build_url(self, build_id: int) -> str:
        """Return the public page of a build, the link given to forges."""
        return f"{self.public_url.rstrip('/')}/builds/{build_id}"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A verified delivery that deliberately starts no build, and why.

    Answered 200 with the reason: forges disable hooks that keep answering 4xx. The
    reason is cut to `bounds.MAX_REASON` characters, whatever names it quotes.
    """

    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", bounds.cut(self.reason, bounds.MAX_REASON))


Outcome = BuildRequest | Ignored
"""What a verified, parsed delivery becomes: a build to store, or a reason not to."""


class Receiver(Protocol):
    """What `github.receive` and `gitlab.receive` are: a verified delivery's outcome."""

    def __call__(
        self,
        headers: Mapping[str, str],
        body: bytes,
        config: WebhookConfig,
        *,
        received_at: datetime,
    ) -> Outcome:
        """Verify, parse and filter one delivery; raise a `WebhookError` to refuse it."""
        ...
