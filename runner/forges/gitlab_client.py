"""`GitLabClient`: commit statuses, archives and releases on GitLab, as a `ForgeClient`.

Thin I/O shell: strings the pure builders and decoders of `runner.forges.gitlab`
together over a `ForgeTransport`. What it decides itself:

- statuses: it remembers the last non-final state it posted per (project, commit, ref)
  and never posts a transition GitLab refuses (`gitlab.transition_allowed`); a refusal
  that still comes back (the previous post came from an earlier process) counts as
  "already there"; 409 (the commit's lock is busy) is retried by the transport;
- publishing, one attempt per `publish_release` call, with the decisions of
  `runner.forges.releaseplan`: every name is checked first; the package's files
  (`isorunner` at the tag's version) are listed and planned against ours: complete
  copies with the same SHA-256 are kept, partial and stale copies and second copies of
  a name deleted (a download serves the newest copy), the rest uploaded strictly one
  after the other (parallel first uploads race into 500s, forge-apis.md §6.2); after a
  5xx or a lost connection on an upload the files are listed again, and a copy the
  forge did store whole is kept. Then the release is looked up by tag: created with
  links when missing (and, after an ambiguous answer to the create, looked up again
  rather than created twice), else updated, its links added or repointed. A release
  that vanishes meanwhile (a person deleted it) starts the attempt over.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from runner.forges import gitlab
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import (
    Conflict,
    ForgeUnavailable,
    NotFound,
    Rejected,
    ReleaseGone,
    TransitionRefused,
)
from runner.forges.gitlab import ExistingLink, GitLabRelease, GitLabState, ReleaseLink
from runner.forges.protocol import CommitState, Progress
from runner.forges.releaseplan import LocalAsset, RemoteAsset, plan_assets
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
#: How many pages of packages and of package files to read (100 per page).
MAX_PAGES = 20
#: How often one attempt starts over when the release vanishes under it.
MAX_ROUNDS = 3


class GitLabClient:
    """Talks to one GitLab instance (gitlab.com or self-managed).

    Args:
        transport: The shared transport.
        tokens: Gives the token for each project (usually one `StaticToken`).
        api_url: The REST API base, ending in `/api/v4`.
        status_name: The commit status name shown on GitLab.
        package_name: The generic package the release files are uploaded to; the
            package version is the tag.
        upload_attempts: How many times one attempt sends one file before it gives
            up (the next attempt, later, resumes where this one stopped).
    """

    def __init__(
        self,
        transport: ForgeTransport,
        tokens: TokenProvider,
        *,
        api_url: str = "https://gitlab.com/api/v4",
        status_name: str = "isorunner",
        package_name: str = "isorunner",
        upload_attempts: int = 3,
    ) -> None:
        self._transport = transport
        self._tokens = tokens
        self._api_url = api_url.rstrip("/")
        self._status_name = status_name
        self._package_name = package_name
        self._upload_attempts = upload_attempts
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
        self,
        repo: str,
        tag: str,
        files: Sequence[LocalAsset],
        *,
        name: str,
        body: str,
        progress: Progress | None = None,
    ) -> str:
        """Make one attempt to publish `files` as package files and the release of `tag`.

        Returns:
            The release's web page.

        Raises:
            ReleaseRefused: The tag or a file name is not allowed in the package registry
                (final: no attempt can succeed).
            ReleaseGone: The release kept vanishing while this attempt filled it.
            ForgeError: Any other refusal, or the forge could not be reached.
        """
        gitlab.check_package_names(self._package_name, tag, [f.name for f in files])
        for round_ in range(1, MAX_ROUNDS + 1):
            try:
                return await self._publish_once(
                    repo, tag, files, name=name, body=body, progress=progress
                )
            except ReleaseGone as exc:
                log.warning("gitlab_release_vanished", project=repo, tag=tag, round=round_)
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
        plan = plan_assets(files, await self._package_files(repo, tag))
        for kept in plan.keep:
            if progress is not None:
                await progress(kept.name)
        for stale in plan.delete:
            log.info("gitlab_package_file_replaced", project=repo, file=stale.name)
            await self._delete_file(repo, stale)
        for local in plan.upload:
            await self._upload(repo, tag, local)
            if progress is not None:
                await progress(local.name)
        links = [
            ReleaseLink(
                name=f.name,
                url=gitlab.package_file_url(
                    self._api_url, repo, package=self._package_name, version=tag, file_name=f.name
                ),
                direct_asset_path=f"/{f.name}",
            )
            for f in files
        ]
        return (await self._release(repo, tag, name, body, links)).links.self_url

    async def _package_files(self, repo: str, tag: str) -> list[RemoteAsset]:
        """Every file of the package at version `tag` (GitLab may hold two of a name)."""
        token = await self._tokens.token_for(repo)
        packages: list[int] = []
        for page in range(1, MAX_PAGES + 1):
            request = gitlab.build_list_packages(
                self._api_url, token, repo, package=self._package_name, version=tag, page=page
            )
            batch = gitlab.decode_packages(await self._transport.send(request))
            # `package_name` is a fuzzy filter, and older GitLabs ignore the version.
            packages += [p.id for p in batch if p.name == self._package_name and p.version == tag]
            if len(batch) < gitlab.PAGE_SIZE:
                break
        found: list[RemoteAsset] = []
        for package_id in packages:
            for page in range(1, MAX_PAGES + 1):
                request = gitlab.build_list_package_files(
                    self._api_url, token, repo, package_id, page=page
                )
                try:
                    batch_files = gitlab.decode_package_files(await self._transport.send(request))
                except NotFound:
                    break  # the package was deleted between the two calls
                found += [gitlab.remote_file(f, package_id) for f in batch_files]
                if len(batch_files) < gitlab.PAGE_SIZE:
                    break
        return found

    async def _delete_file(self, repo: str, stale: RemoteAsset) -> None:
        token = await self._tokens.token_for(repo)
        request = gitlab.build_delete_package_file(
            self._api_url, token, repo, stale.parent, stale.id
        )
        try:
            gitlab.decode_no_content(await self._transport.send(request))
        except NotFound:
            log.info("gitlab_package_file_already_gone", project=repo, file=stale.name)

    async def _upload(self, repo: str, tag: str, local: LocalAsset) -> None:
        """Send one file until the package holds it whole, within `upload_attempts`."""
        failure: ForgeUnavailable | None = None
        for attempt in range(1, self._upload_attempts + 1):
            token = await self._tokens.token_for(repo)
            request = gitlab.build_package_upload(
                self._api_url,
                token,
                repo,
                package=self._package_name,
                version=tag,
                file_name=local.name,
                size=local.size,
            )
            try:
                response = await self._transport.upload_file(request, local.path)
                stored = gitlab.decode_package_file(response)
            except ForgeUnavailable as exc:
                failure = exc
                log.warning("gitlab_upload_failed", project=repo, file=local.name, attempt=attempt)
            else:
                digest = (stored.file_sha256 or local.sha256).lower()
                if stored.size == local.size and digest == local.sha256.lower():
                    log.info("gitlab_package_file_stored", project=repo, file=stored.file_name)
                    return
                log.warning("gitlab_upload_stored_short", project=repo, file=local.name)
            # A 502/504 or a lost connection can hide a stored or half-stored file,
            # and a second upload of the name adds a second file: look first.
            plan = plan_assets(
                [local], await self._package_files(repo, tag), trust_size=(local.name,)
            )
            for stale in plan.delete:
                await self._delete_file(repo, stale)
            if not plan.upload:
                log.info("gitlab_upload_found_stored", project=repo, file=local.name)
                return
        raise ForgeUnavailable(
            f"could not upload {local.name} to package {self._package_name} {tag} of {repo} "
            f"after {self._upload_attempts} attempts ({failure}); publishing is tried again "
            "later",
            status_code=failure.status_code if failure else None,
            headers=failure.headers if failure else None,
            rate_limit=failure.rate_limit if failure else None,
        ) from failure

    async def _get_release(self, repo: str, tag: str) -> GitLabRelease | None:
        token = await self._tokens.token_for(repo)
        request = gitlab.build_get_release(self._api_url, token, repo, tag)
        try:
            return gitlab.decode_release(await self._transport.send(request))
        except NotFound:
            return None

    async def _release(
        self, repo: str, tag: str, name: str, body: str, links: list[ReleaseLink]
    ) -> GitLabRelease:
        """The tag's release with `links`: looked up first, created only when missing."""
        if await self._get_release(repo, tag) is None:
            token = await self._tokens.token_for(repo)
            create = gitlab.build_create_release(
                self._api_url, token, repo, tag, name=name, description=body, links=links
            )
            try:
                return gitlab.decode_release(await self._transport.send(create))
            except (ForgeUnavailable, Conflict) as exc:
                # A 502 may hide a stored release, and a 409 says one exists: look it
                # up instead of creating again (forge-apis.md §7.2).
                log.warning("gitlab_release_create_unclear", project=repo, tag=tag, error=str(exc))
                if await self._get_release(repo, tag) is None:
                    raise
        token = await self._tokens.token_for(repo)
        update = gitlab.build_update_release(
            self._api_url, token, repo, tag, name=name, description=body
        )
        try:
            release = gitlab.decode_release(await self._transport.send(update))
        except NotFound as exc:
            raise ReleaseGone(str(exc)) from exc
        existing = await self._links(repo, tag)
        for link in links:
            await self._put_link(repo, tag, link, existing.get(link.name))
        return release

    async def _links(self, repo: str, tag: str) -> dict[str, ExistingLink]:
        token = await self._tokens.token_for(repo)
        listing = gitlab.build_list_links(self._api_url, token, repo, tag)
        try:
            return {
                link.name: link for link in gitlab.decode_links(await self._transport.send(listing))
            }
        except NotFound as exc:
            raise ReleaseGone(str(exc)) from exc

    async def _put_link(
        self, repo: str, tag: str, link: ReleaseLink, current: ExistingLink | None
    ) -> None:
        """Add `link` to the release, or repoint the link of its name; never add it twice."""
        token = await self._tokens.token_for(repo)
        if current is not None:
            if current.url == link.url:
                return
            request = gitlab.build_update_link(
                self._api_url, token, repo, tag, link_id=current.id, link=link
            )
        else:
            request = gitlab.build_create_link(self._api_url, token, repo, tag, link)
        try:
            gitlab.decode_link(await self._transport.send(request))
        except NotFound as exc:
            raise ReleaseGone(str(exc)) from exc
        except (ForgeUnavailable, Rejected) as exc:
            if current is not None:
                raise
            # A 502 may hide a stored link; a 400 "has already been taken" says one
            # of the name or URL exists. Either way it is fine if it is ours now.
            now = (await self._links(repo, tag)).get(link.name)
            if now is None or now.url != link.url:
                raise
            log.info(
                "gitlab_link_found_stored", project=repo, tag=tag, link=link.name, error=str(exc)
            )
