"""`GitLabClient`: commit statuses, archives and releases on GitLab, as a `ForgeClient`.

Thin I/O shell: strings the pure builders and decoders of `runner.forges.gitlab`
together over a `ForgeTransport`. What it decides itself:

- statuses: it remembers the last non-final state it posted per (project, commit, ref)
  and never posts a transition GitLab refuses (`gitlab.transition_allowed`); a refusal
  that still comes back (the previous post came from an earlier process) counts as
  "already there"; 409 (the commit's lock is busy) is retried by the transport;
- publishing: checks every name first, uploads the files to the generic package
  registry strictly one after the other (parallel first uploads race into 500s,
  forge-apis.md §6.2), then creates the release with links to them, or, when it exists
  (409), updates it and adds or repoints its links.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from runner.forges import gitlab
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import Conflict, TransitionRefused
from runner.forges.gitlab import GitLabRelease, GitLabState, ReleaseLink
from runner.forges.protocol import CommitState
from runner.forges.tokens import TokenProvider

log = structlog.get_logger(__name__)

#: How isorunner's states read on GitLab (issue 4 "Statuses").
GITLAB_STATES: dict[CommitState, GitLabState] = {
    CommitState.QUEUED: GitLabState.PENDING,
    CommitState.RUNNING: GitLabState.RUNNING,
    CommitState.SUCCESS: GitLabState.SUCCESS,
    CommitState.FAILURE: GitLabState.FAILED,
    CommitState.ERROR: GitLabState.FAILED,
    CommitState.CANCELLED: GitLabState.CANCELED,
}

_OPEN_STATES = (GitLabState.PENDING, GitLabState.RUNNING)


class GitLabClient:
    """Talks to one GitLab instance (gitlab.com or self-managed).

    Args:
        transport: The shared transport.
        tokens: Gives the token for each project (usually one `StaticToken`).
        api_url: The REST API base, ending in `/api/v4`.
        status_name: The commit status name shown on GitLab.
        package_name: The generic package the release files are uploaded to; the
            package version is the tag.
    """

    def __init__(
        self,
        transport: ForgeTransport,
        tokens: TokenProvider,
        *,
        api_url: str = "https://gitlab.com/api/v4",
        status_name: str = "isorunner",
        package_name: str = "isorunner",
    ) -> None:
        self._transport = transport
        self._tokens = tokens
        self._api_url = api_url.rstrip("/")
        self._status_name = status_name
        self._package_name = package_name
        # Last open (pending/running) state posted per status; final ones are dropped.
        self._open: dict[tuple[str, str, str], GitLabState] = {}

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
        """Post a commit status unless GitLab would refuse the transition.

        GitLab's "Cannot transition status" refusal is not raised: it means GitLab
        already shows that state.

        Raises:
            ForgeError: The forge refused the status or could not be reached.
        """
        new = GITLAB_STATES[state]
        key = (repo, sha, ref or "")
        previous = self._open.get(key)
        if not gitlab.transition_allowed(previous, new):
            log.info("gitlab_status_kept", project=repo, sha=sha, current=previous, wanted=new)
            return
        token = await self._tokens.token_for(repo)
        request = gitlab.build_commit_status(
            self._api_url,
            token,
            repo,
            sha,
            state=new,
            name=self._status_name,
            description=description,
            target_url=target_url,
            ref=ref,
        )
        try:
            gitlab.decode_commit_status(await self._transport.send(request))
        except TransitionRefused:
            # Already in that state, posted earlier (perhaps by a previous process).
            log.info("gitlab_status_already_there", project=repo, sha=sha, state=new)
        if new in _OPEN_STATES:
            self._open[key] = new
        else:
            self._open.pop(key, None)

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the project's tar.gz archive at `sha` to `dest`; return its size.

        Raises:
            DownloadTooLarge: The archive is larger than `max_bytes`.
            ForgeError: The forge refused or could not be reached.
        """
        token = await self._tokens.token_for(repo)
        request = gitlab.build_archive(self._api_url, token, repo, sha)
        return await self._transport.download_to(request, dest, max_bytes=max_bytes)

    async def publish_release(
        self, repo: str, tag: str, files: Sequence[Path], *, name: str, body: str
    ) -> str:
        """Upload `files` as a generic package, then create or update the release.

        Returns:
            The release's web page.

        Raises:
            Rejected: The tag or a file name is not allowed in the package registry.
            ForgeError: Any other refusal, or the forge could not be reached.
        """
        gitlab.check_package_names(self._package_name, tag, [p.name for p in files])
        links = []
        for path in files:
            token = await self._tokens.token_for(repo)
            size = (await anyio.Path(path).stat()).st_size
            request = gitlab.build_package_upload(
                self._api_url,
                token,
                repo,
                package=self._package_name,
                version=tag,
                file_name=path.name,
                size=size,
            )
            stored = gitlab.decode_package_file(await self._transport.upload_file(request, path))
            log.info("gitlab_package_file_stored", project=repo, file=stored.file_name)
            url = gitlab.package_file_url(
                self._api_url, repo, package=self._package_name, version=tag, file_name=path.name
            )
            links.append(ReleaseLink(name=path.name, url=url, direct_asset_path=f"/{path.name}"))
        return (await self._create_or_update(repo, tag, name, body, links)).links.self_url

    async def _create_or_update(
        self, repo: str, tag: str, name: str, body: str, links: list[ReleaseLink]
    ) -> GitLabRelease:
        token = await self._tokens.token_for(repo)
        create = gitlab.build_create_release(
            self._api_url, token, repo, tag, name=name, description=body, links=links
        )
        try:
            return gitlab.decode_release(await self._transport.send(create))
        except Conflict:
            log.info("gitlab_release_exists", project=repo, tag=tag)
        update = gitlab.build_update_release(
            self._api_url, token, repo, tag, name=name, description=body
        )
        release = gitlab.decode_release(await self._transport.send(update))
        listing = gitlab.build_list_links(self._api_url, token, repo, tag)
        existing = {
            link.name: link for link in gitlab.decode_links(await self._transport.send(listing))
        }
        for link in links:
            current = existing.get(link.name)
            if current is None:
                request = gitlab.build_create_link(self._api_url, token, repo, tag, link)
            elif current.url != link.url:
                request = gitlab.build_update_link(
                    self._api_url, token, repo, tag, link_id=current.id, link=link
                )
            else:
                continue
            gitlab.decode_link(await self._transport.send(request))
        return release
