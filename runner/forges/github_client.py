"""`GitHubClient`: commit statuses, tarballs and releases on GitHub, as a `ForgeClient`.

Thin I/O shell: strings the pure builders and decoders of `runner.forges.github`
together over a `ForgeTransport`, asking a `TokenProvider` for a token per request. All
the decisions it makes itself are about publishing:

- every file is checked against GitHub's asset limit (under 2 GiB) before any request;
- the release is found by tag, else among drafts (invisible to the by-tag lookup), else
  created as a draft; an existing one is reused, draft or not;
- an existing asset of the same name is deleted, then the file is uploaded;
- after a 5xx or a timeout the release's assets are listed: a complete one (state
  `uploaded`, right size) is kept, a partial one is deleted and the file sent again;
- only then is a draft published (immutable releases take no assets once published).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import structlog

from runner.forges import github
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import AssetTooLarge, Conflict, ForgeUnavailable, NotFound
from runner.forges.github import GitHubState, Release, ReleaseAsset
from runner.forges.protocol import CommitState
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


class GitHubClient:
    """Talks to GitHub (github.com or Enterprise) for one isorunner instance.

    Args:
        transport: The shared transport.
        tokens: Gives the token for each repository (static token or GitHub App).
        api_url: The REST API base (`https://api.github.com`, GHES `https://host/api/v3`).
        upload_url: The asset upload base (`https://uploads.github.com`, GHES
            `https://host/api/uploads`).
        context: The commit status context shown on GitHub.
        upload_attempts: How many times one asset is sent before giving up.
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
        self, repo: str, tag: str, files: Sequence[Path], *, name: str, body: str
    ) -> str:
        """Publish the release for `tag` with `files` as assets; return its web URL.

        Raises:
            AssetTooLarge: A file is 2 GiB or more; nothing was sent.
            Conflict: The release is published and immutable and lacks some files.
            ForgeError: Any other refusal, or the forge could not be reached.
        """
        sizes = await _asset_sizes(files)
        release = await self._find_or_create_release(repo, tag, name=name, body=body)
        assets = {asset.name: asset for asset in await self._list_assets(repo, release.id)}
        if not release.draft and release.immutable:
            missing = [p.name for p, size in sizes if not _complete(assets.get(p.name), size)]
            if missing:
                raise Conflict(
                    f"could not publish {', '.join(missing)} to the release for tag {tag} of "
                    f"{repo}: it is published and immutable, so it takes no new assets; "
                    "push a new tag to publish this build"
                )
            return release.html_url
        for path, size in sizes:
            await self._upload(repo, release.id, path, size, assets.get(path.name))
        if release.draft:
            draft_id = release.id
            response = await self._send(
                repo,
                lambda token: github.build_publish_release(self._api_url, token, repo, draft_id),
            )
            release = github.decode_release(response)
        return release.html_url

    async def _find_or_create_release(
        self, repo: str, tag: str, *, name: str, body: str
    ) -> Release:
        by_tag = await self._send(
            repo, lambda token: github.build_release_by_tag(self._api_url, token, repo, tag)
        )
        try:
            return github.decode_release(by_tag)
        except NotFound:
            log.debug("github_release_not_published", repo=repo, tag=tag)
        # Drafts are invisible to the by-tag lookup (forge-apis.md §9.13).
        existing = await self._find_release_in_list(repo, tag)
        if existing is not None:
            return existing
        create = await self._send(
            repo,
            lambda token: github.build_create_release(
                self._api_url, token, repo, tag, name=name, body=body
            ),
        )
        try:
            return github.decode_release(create)
        except Conflict:
            # Someone created it between our look-up and our create: use theirs.
            existing = await self._find_release_in_list(repo, tag)
            if existing is None:
                raise
            return existing

    async def _find_release_in_list(self, repo: str, tag: str) -> Release | None:
        for page in range(1, MAX_RELEASE_PAGES + 1):
            response = await self._send(
                repo,
                functools.partial(github.build_list_releases, self._api_url, repo=repo, page=page),
            )
            releases = github.decode_releases(response)
            for release in releases:
                if release.tag_name == tag:
                    return release
            if len(releases) < github.PAGE_SIZE:
                return None
        return None

    async def _list_assets(self, repo: str, release_id: int) -> list[ReleaseAsset]:
        response = await self._send(
            repo, lambda token: github.build_list_assets(self._api_url, token, repo, release_id)
        )
        return github.decode_assets(response)

    async def _delete_asset(self, repo: str, asset: ReleaseAsset) -> None:
        response = await self._send(
            repo, lambda token: github.build_delete_asset(self._api_url, token, repo, asset.id)
        )
        try:
            github.decode_no_content(response)
        except NotFound:
            log.info("github_asset_already_gone", repo=repo, asset=asset.name)

    async def _upload(
        self, repo: str, release_id: int, path: Path, size: int, existing: ReleaseAsset | None
    ) -> ReleaseAsset:
        if existing is not None:
            # GitHub answers 422 already_exists to a second asset of the same name.
            await self._delete_asset(repo, existing)
        failure: ForgeUnavailable | None = None
        for attempt in range(1, self._upload_attempts + 1):
            token = await self._tokens.token_for(repo)
            request = github.build_upload_asset(
                self._upload_url, token, repo, release_id, name=path.name, size=size
            )
            try:
                return github.decode_asset(await self._transport.upload_file(request, path))
            except ForgeUnavailable as exc:
                failure = exc
                log.warning("github_upload_failed", repo=repo, asset=path.name, attempt=attempt)
            # A 502/504 or a timeout can hide a stored or half-stored asset (§9.14).
            current = {a.name: a for a in await self._list_assets(repo, release_id)}
            found = current.get(path.name)
            if _complete(found, size):
                assert found is not None
                return found
            if found is not None:
                await self._delete_asset(repo, found)
        assert failure is not None
        raise ForgeUnavailable(
            f"could not upload {path.name} to release {release_id} of {repo} after "
            f"{self._upload_attempts} attempts ({failure}); publish the build again later",
            status_code=failure.status_code,
            headers=failure.headers,
            rate_limit=failure.rate_limit,
        ) from failure


def _complete(asset: ReleaseAsset | None, size: int) -> bool:
    return asset is not None and asset.state == "uploaded" and asset.size == size


async def _asset_sizes(files: Sequence[Path]) -> list[tuple[Path, int]]:
    names = [path.name for path in files]
    if len(set(names)) != len(names):
        raise ValueError(f"release assets need distinct file names, got {names}")
    sizes = []
    for path in files:
        size = (await anyio.Path(path).stat()).st_size
        if size >= github.MAX_ASSET_SIZE:
            raise AssetTooLarge(
                f"could not publish {path.name}: it is {size} bytes, and GitHub release "
                f"assets must be under 2 GiB ({github.MAX_ASSET_SIZE} bytes); make the "
                "image smaller (fewer packages, stronger squashfs compression)",
                path=str(path),
                size=size,
                limit=github.MAX_ASSET_SIZE,
            )
        sizes.append((path, size))
    return sizes
