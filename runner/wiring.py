"""Wiring: builds the runner's components from `Settings`.

I/O shell (it opens the store and the HTTP client, and reads the GitHub App's key).
This is where the configuration turns into objects: the sandbox's and the web app's
configurations, the forge clients, the packages step, and (in `running_service`) the
job store, the HTTP clients, the sandbox, the pipeline and the worker. Everything below it receives
what it needs in its constructor. `runner.service` runs what this builds;
`runner.check` and `runner.localbuild` reuse its pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from runner.boottest import BootPlan, BootStep, plan_for
from runner.buildlogs import BuildLogs
from runner.exceptions import ConfigError
from runner.forges.client import ForgeTransport
from runner.forges.github_app import GitHubAppAuth, load_private_key
from runner.forges.github_client import GitHubClient
from runner.forges.gitlab_client import GitLabClient
from runner.forges.protocol import ForgeClient
from runner.forges.tokens import StaticToken, TokenProvider
from runner.jobs import QueuePolicy
from runner.metrics import Metrics
from runner.notifications import Notifier, status_notifier
from runner.packages import (
    Downloader,
    DownloadPolicy,
    PackageCache,
    PackageSources,
    PackageSync,
    SyncConfig,
)
from runner.packages.settings import sources_for
from runner.packages.step import BuildPackages, PackageMetrics
from runner.pipeline import Pipeline, PipelineConfig
from runner.publish import Publisher
from runner.publish.gpg import GpgSigner
from runner.publish.keys import load_secret_key
from runner.publish.sealer import Sealer
from runner.publish.signing import Signer
from runner.settings import Settings, SigningSettings
from runner.store import JobStore, open_store
from runner.worker import Worker
from sandbox import BootTester, BuildSandbox, SandboxConfig, parse_size
from webhooks.build import BuildRequest, Forge, SigningKey
from webhooks.config import RepoRule, WebhookConfig

USER_AGENT = "isorunner/0.1"


def machine_prefix(sandbox_root: Path) -> str:
    """The container and cgroup name prefix of the instance that owns `sandbox_root`.

    At start-up an instance removes every container under its prefix (what a crash
    left). Deriving the prefix from the sandbox root keeps two instances on one host
    (or a test server beside a running service) from removing each other's builds,
    while a restarted instance still finds its own.
    """
    digest = hashlib.sha256(str(sandbox_root.absolute()).encode()).hexdigest()
    return f"iso{digest[:8]}"


def queue_policy(settings: Settings) -> QueuePolicy:
    """Which queued build runs next, from the `[sandbox]` section's caps."""
    return QueuePolicy(
        max_untrusted_per_author=settings.sandbox.max_untrusted_per_author,
        max_untrusted_per_repo=settings.sandbox.max_untrusted_per_repo,
    )


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The sandbox's configuration from the `[sandbox]` section."""
    section = settings.sandbox
    return SandboxConfig(
        machine_prefix=machine_prefix(section.sandbox_root),
        base_dir=section.base,
        sandbox_root=section.sandbox_root,
        memory_limit=parse_size(section.memory_limit),
        cpus=section.cpus,
        pids_limit=section.pids_limit,
        timeout_seconds=section.timeout_seconds,
        warning_seconds=section.warning_seconds,
        max_output_bytes=parse_size(section.max_output_bytes),
        max_disk_bytes=parse_size(section.max_disk_bytes),
        uid_base=section.uid_base,
        isolation=section.isolation,
    )


def boot_tester(settings: Settings) -> BootTester:
    """The boot test's QEMU runner: the build sandbox's settings, `[boot_test]`'s probe time."""
    return BootTester(sandbox_config(settings), probe_seconds=settings.boot_test.kvm_probe_seconds)


def boot_plans(settings: Settings) -> Callable[[BuildRequest], BootPlan | None]:
    """The boot tests of each request: `[boot_test]` and its repository's `boot_test`."""
    repos = {(repo.forge, repo.name.lower()): repo.boot_test for repo in settings.repos}

    def plans(request: BuildRequest) -> BootPlan | None:
        repo = repos.get((request.forge, request.repo.lower()))
        return plan_for(settings.boot_test, repo, request.kind)

    return plans


def webhook_config(settings: Settings) -> WebhookConfig:
    """The web app's configuration: secrets, repository rules and limits."""
    return WebhookConfig(
        public_url=settings.server.base_url,
        repos=tuple(
            RepoRule(
                forge=repo.forge,
                name=repo.name,
                branches=repo.branches,
                release_tags=repo.release_tags,
                pull_requests=repo.pull_requests,
            )
            for repo in settings.repos
        ),
        github_secret=settings.github.webhook_secret,
        gitlab_token=settings.gitlab.webhook_secret,
        gitlab_signing_token=settings.gitlab.signing_token,
        max_body_bytes=settings.server.max_body_bytes,
        max_bodies_in_flight_bytes=settings.server.max_bodies_in_flight_bytes,
        body_seconds=settings.server.body_timeout_seconds,
    )


def forge_clients(settings: Settings, transport: ForgeTransport) -> dict[Forge, ForgeClient]:
    """A client for each forge that has API credentials configured."""
    clients: dict[Forge, ForgeClient] = {}
    github = settings.github
    tokens = github_tokens(settings, transport)
    if tokens is not None:
        clients[Forge.GITHUB] = GitHubClient(
            transport,
            tokens,
            api_url=str(github.api_url),
            upload_url=str(github.upload_url),
            context=github.status_context,
        )
    gitlab = settings.gitlab
    if gitlab.token is not None:
        clients[Forge.GITLAB] = GitLabClient(
            transport,
            StaticToken(gitlab.token.get_secret_value()),
            api_url=f"{str(gitlab.url).rstrip('/')}/api/v4",
            status_name=gitlab.status_name,
        )
    return clients


def github_tokens(settings: Settings, transport: ForgeTransport) -> TokenProvider | None:
    """GitHub's token source: the static token, the App's installation tokens, or None.

    Raises:
        ConfigError: The App's private key cannot be read.
    """
    github = settings.github
    if github.token is not None:
        return StaticToken(github.token.get_secret_value())
    if github.app_id is not None and github.private_key_file is not None:
        return GitHubAppAuth(
            transport,
            app_id=str(github.app_id),
            private_key=read_private_key(github.private_key_file),
            api_url=str(github.api_url),
        )
    return None


def read_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Load the GitHub App's private key (PEM) from `path`.

    Raises:
        ConfigError: The file cannot be read or is not an RSA private key; the
            message names the file, never its contents.
    """
    try:
        return load_private_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"github.private_key_file: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(
            f"github.private_key_file: {path} is not a PEM RSA private key; "
            "download a new key from the GitHub App's settings"
        ) from None


def forge_hosts(settings: Settings) -> dict[str, str]:
    """The API hosts of each forge, for the `forge` label of the forge call metric."""
    github_api = httpx.URL(str(settings.github.api_url)).host
    hosts = {
        github_api: Forge.GITHUB.value,
        httpx.URL(str(settings.github.upload_url)).host: Forge.GITHUB.value,
        httpx.URL(str(settings.gitlab.url)).host: Forge.GITLAB.value,
    }
    if github_api == "api.github.com":
        # The tarball answers with a redirect to codeload (forge-apis.md §9.17).
        hosts["codeload.github.com"] = Forge.GITHUB.value
    return hosts


def package_sources(settings: Settings, forge: str, repo: str) -> PackageSources:
    """The repositories the builds of `forge`:`repo` may use ([packages] + its overrides)."""
    entry = next(
        (r for r in settings.repos if r.forge.value == forge and r.name.lower() == repo.lower()),
        None,
    )
    # Messages name where extra_repos is configured: the entry, or [packages].
    own = entry is not None and entry.extra_repos is not None
    key = f'repos "{entry.forge.value}:{entry.name}"' if own and entry else "packages"
    return sources_for(settings.packages, entry, config_key=key)


def build_packages(
    settings: Settings, http: httpx.AsyncClient, metrics: PackageMetrics | None = None
) -> BuildPackages:
    """The packages step of every build, over the `[packages]` section.

    Args:
        settings: The configuration.
        http: The client package downloads use (the caller owns it).
        metrics: Counts cache hits, misses and bytes.
    """
    section = settings.packages
    cache = PackageCache(section.cache_dir, max_bytes=parse_size(section.max_cache_bytes))
    policy = DownloadPolicy(
        attempts=section.download_attempts,
        read_timeout=section.download_timeout_seconds,
        connect_timeout=min(10.0, section.download_timeout_seconds),
        parallel=section.parallel_downloads,
    )
    sync = PackageSync(
        SyncConfig(keyring=section.keyring, verify_workers=section.verify_workers),
        cache=cache,
        downloader=Downloader(http, policy),
    )
    return BuildPackages(
        sync,
        sources=lambda forge, repo: package_sources(settings, forge, repo),
        architecture=section.architecture,
        metrics=metrics,
    )


def package_client() -> httpx.AsyncClient:
    """The HTTP client of package downloads (mirrors, never forges: no credentials)."""
    return httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=True)


def secrets_of(settings: Settings) -> list[SecretStr | None]:
    """Every secret value in the settings, for log redaction."""
    return [
        settings.server.admin_token,
        settings.github.webhook_secret,
        settings.github.token,
        settings.gitlab.webhook_secret,
        settings.gitlab.signing_token,
        settings.gitlab.token,
        settings.signing.key_password,
        settings.signing.gpg_passphrase,
    ]


def isorunner_version() -> str:
    """The installed isorunner's version (for the provenance's builder)."""
    try:
        return importlib.metadata.version("isorunner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def load_signer(signing: SigningSettings) -> Signer | None:
    """The release signer of `[signing] key_file`, decrypted once; None without a key.

    The key derivation of an encrypted key (minisign's: about 1 GiB and seconds) runs
    in a worker thread.

    Raises:
        runner.publish.exceptions.KeyFileError: The key cannot be loaded; the message
            names the file and says why (never the password).
    """
    if signing.key_file is None:
        return None
    password = signing.key_password
    secret = None if password is None else password.get_secret_value().encode("utf-8")
    key = await anyio.to_thread.run_sync(load_secret_key, signing.key_file, secret)
    return Signer(key)


def gpg_signer(signing: SigningSettings) -> GpgSigner | None:
    """The detached GPG signer of `[signing] gpg_key`, or None."""
    if signing.gpg_key is None:
        return None
    homedir = signing.gpg_homedir if signing.gpg_homedir is not None else Path.home() / ".gnupg"
    return GpgSigner(signing.gpg_key, homedir=homedir, passphrase=signing.gpg_passphrase)


def rebuild_check_rule(settings: Settings) -> Callable[[BuildRequest], bool]:
    """Whether a request's repository has `rebuild_check` on (unknown ones: the default)."""
    wanted = {(repo.forge, repo.name.lower()): repo.rebuild_check for repo in settings.repos}
    return lambda request: wanted.get((request.forge, request.repo.lower()), True)


def signing_key_of(signer: Signer | None) -> SigningKey | None:
    """What the web app shows and serves of the signing key."""
    if signer is None:
        return None
    public = signer.public_key
    return SigningKey(key_id=public.id_text, text=public.file_text())


@dataclass(frozen=True, slots=True)
class Service:
    """The long-lived objects `running_service` builds, for the web app to share."""

    store: JobStore
    worker: Worker
    clients: Mapping[Forge, ForgeClient]
    logs: BuildLogs
    signing_key: SigningKey | None = None


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Service]:
    """Open the store and clients and build the worker; close them all on exit.

    Args:
        settings: The configuration.
        http_transport: Replaces the network transport of the forge HTTP client
            (tests); None uses the real network.
        metrics: Where the worker, notifier, pipeline and forge transport record
            what they do; None records nothing.
    """
    base_url = settings.server.base_url
    timeout = httpx.Timeout(30.0, connect=10.0)
    async with (
        open_store(
            settings.storage.database,
            notify=status_notifier(base_url),
            queue=queue_policy(settings),
        ) as store,
        httpx.AsyncClient(
            transport=http_transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        ) as http,
        package_client() as mirrors,
    ):
        on_response = metrics.forge_response if metrics is not None else None
        clients = forge_clients(settings, ForgeTransport(http, on_response=on_response))
        sandbox = BuildSandbox(sandbox_config(settings))
        logs = BuildLogs(settings.storage.logs_dir)
        signer = await load_signer(settings.signing)
        sealer = Sealer(
            sandbox,
            signer=signer,
            gpg=gpg_signer(settings.signing),
            base_dir=settings.sandbox.base,
            builder_id=base_url,
            builder_version=isorunner_version(),
            isolation=settings.sandbox.isolation,
            rebuild_check=rebuild_check_rule(settings),
        )
        pipeline = Pipeline(
            PipelineConfig(
                work_root=settings.sandbox.sandbox_root / "fetch",
                artifacts_root=settings.sandbox.iso_output_root,
                keep_untrusted_artifacts=settings.storage.keep_untrusted_artifacts,
            ),
            clients=clients,
            sandbox=sandbox,
            logs=logs,
            metrics=metrics,
            boot=BootStep(boot_tester(settings), store),
            boot_plans=boot_plans(settings),
            sealer=sealer,
            packages=build_packages(settings, mirrors, metrics),
            record_packages=store.set_packages,
        )
        notifier = Notifier(store, clients, metrics=metrics)
        publisher = Publisher(
            store,
            clients,
            artifacts_root=settings.sandbox.iso_output_root,
            base_url=base_url,
            metrics=metrics,
            statuses_enqueued=notifier.wake,
        )
        worker = Worker(
            store,
            pipeline,
            notifier,
            publisher=publisher,
            base_url=base_url,
            max_concurrent=settings.sandbox.max_concurrent_builds,
            cleanup_stale=sandbox.cleanup_stale,
            warning_seconds=settings.sandbox.warning_seconds,
            metrics=metrics,
        )
        yield Service(store, worker, clients, logs, signing_key_of(signer))
