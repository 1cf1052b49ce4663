"""`GitHubClient`: commit statuses, tarballs and releases on GitHub, as a `ForgeClient`.

Thin I/O shell: strings the pure builders and decoders of `runner.forges.github`
together over a `ForgeTransport`, asking a `TokenProvider` for a token per request. The
decisions about publishing are `runner.forges.releaseplan`'s; this module applies them
to GitHub, one attempt per `publish_release` call:

- every file is checked against GitHub's asset limit (under 2 GiB) before any request;
- the tag's releases are found by tag (published) and in the release list (drafts,
  which the by-tag lookup does not see); the published one, else the oldest draft, is
  used and other drafts of the tag are deleted; with none, a draft is created, and
  after an ambiguous answer to that create the list is read again before anything else
  (GitHub lets drafts share a tag: a second create makes a second release);
- the release's assets are planned against the files: complete copies with the same
  digest are kept, partial and stale copies deleted, the rest uploaded one by one;
  after a 5xx or a lost connection on an upload the assets are listed again, and a
  copy the forge did store whole is kept;
- only then is a draft published (immutable releases take no assets once published);
- a release that vanishes meanwhile (404: a person deleted it) starts the attempt over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from runner.forges import github
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import (
    AssetTooLarge,
    Conflict,
    ForgeUnavailable,
    ImmutableRelease,
    NotFound,
    ReleaseGone,
)
from runner.forges.github import GitHubState, Release
from runner.forges.protocol import CommitState, Progress
from runner.forges.releaseplan import (
    LocalAsset,
    ReleaseCandidate,
    RemoteAsset,
    pick_release,
    plan_assets,
)
from runner.forges.request import ForgeRequest, ForgeResponse
from runner.forges.tokens import TokenProvider

log = structlog.get_logger(__name__)

#: How isorunner's states read on GitHub (forge-apis.md §3.1; issue 4 "Statuses").
GITHUB_STATES: dict[CommitState, GitHubState] = {
    CommitState.QUEUED: GitHubState.PENDING,
    CommitState.RUNNING: GitHubState.PENDING,
    CommitState.SUCCESS: GitHubState.SUCCESS,
    CommitState.FAILURE: GitHubState.FAILURE,
    CommitState.ERROR: GitHubState.ERROR,
    CommitState.CANCELLED: GitHubState.ERROR,
}

#: How many pages of releases to search for a draft (100 releases per page).
MAX_RELEASE_PAGES = 10
#: How many pages of assets to read (GitHub allows 1000 assets per release).
MAX_ASSET_PAGES = 10
#: How often one attempt starts over when the release vanishes under it.
MAX_ROUNDS = 3


class GitHubClient:
    """Talks to GitHub (github.com or Enterprise) for one isorunner instance.

    Args:
        transport: The shared transport.
        tokens: Gives the token for each repository (static token or GitHub App).
        api_url: The REST API base (`https://api.github.com`, GHES `https://host/api/v3`).
        upload_url: The asset upload base (`https://uploads.github.com`, GHES
            `https://host/api/uploads`).
        context: The commit status context shown on GitHub.
        upload_attempts: How many times one attempt sends one asset before it gives
            up (the next attempt, later, resumes where this one stopped).
    """

    def __init__(
        self,
        transport: ForgeTransport,
        tokens: TokenProvider,
        *,
        api_url: str = "https://api.github.com",
        upload_url: str = "https://uploads.github.com",
        context: str = "isorunner",
        upload_attempts: int = 3,
    ) -> None:
        self._transport = transport
        self._tokens = tokens
        self._api_url = api_url.rstrip("/")
        self._upload_url = upload_url.rstrip("/")
        self._context = context
        self._upload_attempts = upload_attempts

    async def set_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        *,
        description: str,
        target_url: str | None,
        ref: str | None = None,
    ) -> None:
        """Post a commit status; GitHub has no state machine, so every post lands.

        Raises:
            ForgeError: The forge refused the status or could not be reached.
        """
        response = await self._send(
            repo,
            lambda token: github.build_commit_status(
                self._api_url,
                token,
                repo,
                sha,
                state=GITHUB_STATES[state],
                context=self._context,
                description=description,
                target_url=target_url,
            ),
        )
        github.decode_no_content(response)

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        """Stream `repo`'s tarball at `sha` to `dest` (the token stays off codeload).

        Raises:
            DownloadTooLarge: The archive is larger than `max_bytes`.
            ForgeError: The forge refused or could not be reached.
        """
        token = await self._tokens.token_for(repo)
        request = github.build_tarball(self._api_url, token, repo, sha)
        return await self._transport.download_to(request, dest, max_bytes=max_bytes)

    async def _send(self, repo: str, build: Callable[[str], ForgeRequest]) -> ForgeResponse:
        """Send the request `build(token)` makes; after a 401, once more with a new token.

        A GitHub App's cached installation token can be revoked (the app reinstalled,
        permissions changed) before it expires; the token provider then mints a new
        one. A static token is not retried: the operator must replace it.
        """
        token = await self._tokens.token_for(repo)
        response = await self._transport.send(build(token))
        if response.status == 401 and await self._tokens.forget(repo, token):
            log.info("github_token_refused_renewing", repo=repo)
            response = await self._transport.send(build(await self._tokens.token_for(repo)))
        return response

    async def publish_release(
        self,
        repo: str,
        tag: str,
        files: Sequence[LocalAsset],
        *,
        name: str,
        body: str,
        progress: Progress | None = None,
    ) -> str:
        """Make one attempt to publish the release for `tag` with `files`; return its URL.

        Raises:
            AssetTooLarge: A file is 2 GiB or more; nothing was sent.
            ImmutableRelease: The release is published and immutable and lacks files.
            ReleaseGone: The release kept vanishing while this attempt filled it.
            ForgeError: Any other refusal, or the forge could not be reached.
        """
        _check_sizes(files)
        for round_ in range(1, MAX_ROUNDS + 1):
            try:
                return await self._publish_once(
                    repo, tag, files, name=name, body=body, progress=progress
                )
            except ReleaseGone as exc:
                log.warning("github_release_vanished", repo=repo, tag=tag, round=round_)
                gone = exc
        raise ReleaseGone(
            f"could not publish the release for tag {tag} of {repo}: it vanished "
            f"{MAX_ROUNDS} times while isorunner filled it ({gone}); is someone deleting "
            "it? Publishing is tried again later"
        ) from gone

    async def _publish_once(
        self,
        repo: str,
        tag: str,
        files: Sequence[LocalAsset],
        *,
        name: str,
        body: str,
        progress: Progress | None,
    ) -> str:
        release = await self._release_for(repo, tag, name=name, body=body)
        remote = [github.remote_asset(a) for a in await self._list_assets(repo, release.id)]
        plan = plan_assets(files, remote)
        if not release.draft and release.immutable and not plan.done:
            missing = ", ".join(f.name for f in plan.upload) or "replacements"
            raise ImmutableRelease(
                f"could not publish {missing} to the release for tag {tag} of {repo}: it "
                "is published and immutable, so it takes no new assets; push a new tag to "
                "publish this build"
            )
        for kept in plan.keep:
            await _report(progress, kept.name)
        for stale in plan.delete:
            log.info("github_asset_replaced", repo=repo, asset=stale.name, complete=stale.complete)
            await self._delete_asset(repo, stale)
        for local in plan.upload:
            await self._upload(repo, release.id, local)
            await _report(progress, local.name)
        if release.draft:
            draft_id = release.id
            response = await self._send(
                repo,
                lambda token: github.build_publish_release(self._api_url, token, repo, draft_id),
            )
            try:
                release = github.decode_release(response)
            except (NotFound, Conflict) as exc:
                # Deleted, or another release of the tag was published meanwhile: the
                # next round finds what the forge has now.
                raise ReleaseGone(str(exc)) from exc
        return release.html_url

    async def _release_for(self, repo: str, tag: str, *, name: str, body: str) -> Release:
        """The release to publish into: found (orphan drafts deleted) or created."""
        found = await self._use_existing(repo, tag)
        if found is not None:
            return found
        try:
            create = await self._send(
                repo,
                lambda token: github.build_create_release(
                    self._api_url, token, repo, tag, name=name, body=body
                ),
            )
            return github.decode_release(create)
        except (ForgeUnavailable, Conflict) as exc:
            # A 5xx or a lost answer may hide a stored draft; a 422 says a published
            # release of the tag appeared. Either way, look before anything else.
            log.warning("github_release_create_unclear", repo=repo, tag=tag, error=str(exc))
            found = await self._use_existing(repo, tag)
            if found is None:
                raise
            return found

    async def _use_existing(self, repo: str, tag: str) -> Release | None:
        releases = {release.id: release for release in await self._releases_of(repo, tag)}
        choice = pick_release([ReleaseCandidate(r.id, r.draft) for r in releases.values()])
        for orphan in choice.orphans:
            log.warning("github_orphan_release_deleted", repo=repo, tag=tag, release=orphan.id)
            response = await self._send(
                repo,
                functools.partial(
                    github.build_delete_release, self._api_url, repo=repo, release_id=orphan.id
                ),
            )
            try:
                github.decode_no_content(response)
            except NotFound:
                log.info("github_release_already_gone", repo=repo, release=orphan.id)
        return None if choice.use is None else releases[choice.use.id]

    async def _releases_of(self, repo: str, tag: str) -> list[Release]:
        """Every release of `tag`: the published one (by tag) and drafts (in the list)."""
        found: list[Release] = []
        by_tag = await self._send(
            repo, lambda token: github.build_release_by_tag(self._api_url, token, repo, tag)
        )
        try:
            found.append(github.decode_release(by_tag))
        except NotFound:
            log.debug("github_release_not_published", repo=repo, tag=tag)
        # Drafts are invisible to the by-tag lookup (forge-apis.md §9.13).
        for page in range(1, MAX_RELEASE_PAGES + 1):
            response = await self._send(
                repo,
                functools.partial(github.build_list_releases, self._api_url, repo=repo, page=page),
            )
            releases = github.decode_releases(response)
            found.extend(release for release in releases if release.tag_name == tag)
            if len(releases) < github.PAGE_SIZE:
                break
        return found

    async def _list_assets(self, repo: str, release_id: int) -> list[github.ReleaseAsset]:
        assets: list[github.ReleaseAsset] = []
        for page in range(1, MAX_ASSET_PAGES + 1):
            response = await self._send(
                repo,
                functools.partial(
                    github.build_list_assets,
                    self._api_url,
                    repo=repo,
                    release_id=release_id,
                    page=page,
                ),
            )
            try:
                batch = github.decode_assets(response)
            except NotFound as exc:
                raise ReleaseGone(str(exc)) from exc
            assets.extend(batch)
            if len(batch) < github.PAGE_SIZE:
                break
        return assets

    async def _delete_asset(self, repo: str, asset: RemoteAsset) -> None:
        response = await self._send(
            repo, lambda token: github.build_delete_asset(self._api_url, token, repo, asset.id)
        )
        try:
            github.decode_no_content(response)
        except NotFound:
            log.info("github_asset_already_gone", repo=repo, asset=asset.name)

    async def _upload(self, repo: str, release_id: int, local: LocalAsset) -> None:
        """Send one file until the release holds it whole, within `upload_attempts`."""
        failure: ForgeUnavailable | None = None
        for attempt in range(1, self._upload_attempts + 1):
            token = await self._tokens.token_for(repo)
            request = github.build_upload_asset(
                self._upload_url, token, repo, release_id, name=local.name, size=local.size
            )
            ambiguous = True
            try:
                github.decode_asset(await self._transport.upload_file(request, local.path))
            except NotFound as exc:
                raise ReleaseGone(str(exc)) from exc
            except Conflict:
                # 422 already_exists: a copy of the name appeared since the plan.
                ambiguous = False
            except ForgeUnavailable as exc:
                failure = exc
                log.warning("github_upload_failed", repo=repo, asset=local.name, attempt=attempt)
            else:
                return
            # A 502/504 or a lost connection can hide a stored or half-stored asset
            # (forge-apis.md §9.14): look before sending it again.
            current = [github.remote_asset(a) for a in await self._list_assets(repo, release_id)]
            trust = (local.name,) if ambiguous else ()
            plan = plan_assets([local], current, trust_size=trust)
            for stale in plan.delete:
                await self._delete_asset(repo, stale)
            if not plan.upload:
                log.info("github_upload_found_stored", repo=repo, asset=local.name)
                return
        raise ForgeUnavailable(
            f"could not upload {local.name} to release {release_id} of {repo} after "
            f"{self._upload_attempts} attempts ({failure}); publishing is tried again later",
            status_code=failure.status_code if failure else None,
            headers=failure.headers if failure else None,
            rate_limit=failure.rate_limit if failure else None,
        ) from failure


async def _report(progress: Progress | None, name: str) -> None:
    if progress is not None:
        await progress(name)


def _check_sizes(files: Sequence[LocalAsset]) -> None:
    names = [asset.name for asset in files]
    if len(set(names)) != len(names):
        raise ValueError(f"release assets need distinct file names, got {names}")
    for asset in files:
        if asset.size >= github.MAX_ASSET_SIZE:
            raise AssetTooLarge(
                f"could not publish {asset.name}: it is {asset.size} bytes, and GitHub "
                f"release assets must be under 2 GiB ({github.MAX_ASSET_SIZE} bytes); make "
                "the image smaller (fewer packages, stronger squashfs compression)",
                path=str(asset.path),
                size=asset.size,
                limit=github.MAX_ASSET_SIZE,
            )
