"""The one configuration object: TOML file, then environment, with secrets from files.

Pure apart from `load_settings`, which reads the TOML file and the environment once,
in the composition root (`runner.__main__`). Nothing else reads `os.environ`.

Precedence, highest first: `ISORUNNER_SECTION__KEY` environment variables, then the
TOML file, then the defaults below. Every secret may be given inline (`token = "…"`)
or as a file (`token_file = "/run/credentials/isorunner.service/github-token"`), never
both; a file's trailing newline is dropped. Errors name the key and what is wrong and
never echo a value.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runner.exceptions import ConfigError
from runner.packages.settings import (
    ExtraRepoSettings,
    PackageSource,
    PackagesSettings,
    check_archive_date,
    check_extra,
    check_mirrors,
    check_source,
)
from sandbox import parse_size
from webhooks.build import Forge

DEFAULT_CONFIG_PATH = Path("isorunner.toml")

MIN_SECRET_BYTES = 16
"""The shortest secret taken, counted after stripping whitespace.

A file holding only a newline once made the admin token "", which `Bearer ` with
nothing after it matched; a short secret is guessed as easily.
"""


def _long_enough(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value().strip().encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"is empty or shorter than {MIN_SECRET_BYTES} bytes: use a long random value "
            "(`openssl rand -hex 32`), or leave the key out"
        )
    return value


Secret = Annotated[SecretStr, AfterValidator(_long_enough)]
"""A secret setting: at least `MIN_SECRET_BYTES` bytes once stripped; errors never show it."""


class _Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_files(data: Any, names: tuple[str, ...]) -> Any:
    """Replace `<name>_file` keys by the file's contents under `<name>`.

    Runs before validation, so the secret is validated (and hidden) like an inline one.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in names:
        file_key = f"{name}_file"
        if data.get(file_key) in (None, ""):
            data.pop(file_key, None)
            continue
        if data.get(name) not in (None, ""):
            raise ValueError(f"give either {name} or {file_key}, not both")
        path = Path(str(data.pop(file_key)))
        try:
            data[name] = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror}") from exc
    return data


class ServerSettings(_Section):
    """`[server]`: where the HTTP server listens and how forges link back to it."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    public_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    max_bodies_in_flight_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 30
    admin_token: Secret | None = None
    log_format: Literal["console", "json"] = "console"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("admin_token",))

    @property
    def base_url(self) -> str:
        """`public_url` without a trailing slash, ready for `+ "/builds/1"`."""
        return str(self.public_url).rstrip("/")


class StorageSettings(_Section):
    """`[storage]`: the job database and where build logs are kept."""

    database: str = "sqlite:///var/lib/isorunner/isorunner.db"
    logs_dir: Path = Path("/var/lib/isorunner/logs")
    retention_days: Annotated[int, Field(ge=1)] = 90
    keep_untrusted_artifacts: bool = False

    @field_validator("database")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://")):
            raise ValueError("use sqlite:///ABSOLUTE/PATH (or postgresql://… when supported)")
        return value


class SandboxSettings(_Section):
    """`[sandbox]`: where containers live, their limits and their time budget."""

    sandbox_root: Path = Path("/var/lib/isorunner/sandbox")
    base_dir: Path | None = None
    iso_output_root: Path = Path("/var/lib/isorunner/artifacts")
    memory_limit: str = "8G"
    cpus: Annotated[float, Field(gt=0)] = 4
    pids_limit: Annotated[int, Field(ge=16)] = 4096
    timeout_seconds: Annotated[int, Field(ge=10)] = 1200
    warning_seconds: Annotated[int, Field(ge=1)] = 900
    max_output_bytes: str = "8G"
    max_disk_bytes: str = "16G"
    max_concurrent_builds: Annotated[int, Field(ge=1)] = 1
    max_untrusted_per_author: Annotated[int, Field(ge=1)] = 2
    max_untrusted_per_repo: Annotated[int, Field(ge=1)] = 4
    uid_base: Annotated[int, Field(ge=65536)] = 2147352576
    isolation: Literal["userns", "root"] = "userns"

    @field_validator("memory_limit", "max_output_bytes", "max_disk_bytes")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @model_validator(mode="after")
    def _warning_before_timeout(self) -> Self:
        if self.warning_seconds >= self.timeout_seconds:
            raise ValueError("warning_seconds must be smaller than timeout_seconds")
        return self

    @property
    def base(self) -> Path:
        """The base root file system: `base_dir`, or `<sandbox_root>/base`."""
        return self.base_dir if self.base_dir is not None else self.sandbox_root / "base"


class GitHubSettings(_Section):
    """`[github]`: API endpoints, the webhook secret and how to authenticate."""

    api_url: AnyHttpUrl = AnyHttpUrl("https://api.github.com")
    upload_url: AnyHttpUrl = AnyHttpUrl("https://uploads.github.com")
    webhook_secret: Secret | None = None
    token: Secret | None = None
    app_id: int | None = None
    private_key_file: Path | None = None
    status_context: Annotated[str, Field(min_length=1, max_length=255)] = "isorunner"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("webhook_secret", "token"))

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        if self.token is not None and self.app_id is not None:
            raise ValueError("give either token or app_id + private_key_file, not both")
        if (self.app_id is None) != (self.private_key_file is None):
            raise ValueError("app_id and private_key_file go together")
        return self


class GitLabSettings(_Section):
    """`[gitlab]`: the instance, the webhook token or signing token, the API token."""

    url: AnyHttpUrl = AnyHttpUrl("https://gitlab.com")
    webhook_secret: Secret | None = None
    signing_token: Secret | None = None
    token: Secret | None = None
    status_name: Annotated[str, Field(min_length=1, max_length=255)] = "isorunner"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("webhook_secret", "signing_token", "token"))

    @field_validator("signing_token")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("a signing token starts with whsec_ (copy it whole from GitLab)")
        return value


Firmware = Literal["bios", "uefi"]
BootPolicy = Literal["required", "advisory", "off"]
_Pattern = Annotated[str, Field(min_length=1, max_length=200)]


class BootTestSettings(_Section):
    """`[boot_test]`: how every successful build's ISO is booted in QEMU (all repos).

    The defaults suit an emulated CPU (TCG), where a live ISO takes tens of seconds to
    a few minutes to reach its login prompt; a host whose KVM works is much faster.
    """

    firmware: tuple[Firmware, ...] = ("bios", "uefi")
    medium: Literal["cdrom", "usb"] = "cdrom"
    mode: Literal["firmware", "kernel"] = "firmware"
    expect: tuple[_Pattern, ...] = ("login:", "root@archiso")
    timeout_seconds: Annotated[int, Field(ge=10, le=86400)] = 600
    memory: str = "2G"
    cpus: Annotated[int, Field(ge=1, le=64)] = 1
    kvm_probe_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0

    @field_validator("memory")
    @classmethod
    def _size(cls, value: str) -> str:
        if not 64 << 20 <= parse_size(value) <= 1 << 40:
            raise ValueError("give a guest memory size between 64M and 1T, e.g. 2G")
        return value

    @field_validator("firmware")
    @classmethod
    def _some_firmware(cls, value: tuple[Firmware, ...]) -> tuple[Firmware, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError('list each firmware once, e.g. ["bios", "uefi"]')
        return value


class RepoBootTest(_Section):
    """A `[[repos]]` entry's `boot_test`: the policy, and what differs from `[boot_test]`.

    Written as a string (`boot_test = "advisory"`) it sets the policy only. The policy
    says what a failed boot test does: "required" fails the build (and so no release
    is published), "advisory" reports it but the build succeeds, "off" skips the test.
    Without a policy: required for tags, advisory for branches and pull requests.
    """

    policy: BootPolicy | None = None
    expect: tuple[_Pattern, ...] | None = None
    mode: Literal["firmware", "kernel"] | None = None
    firmware: tuple[Firmware, ...] | None = None
    medium: Literal["cdrom", "usb"] | None = None
    timeout_seconds: Annotated[int, Field(ge=10, le=86400)] | None = None
    network: bool = False

    @model_validator(mode="before")
    @classmethod
    def _policy_string(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, str) else data


class SigningSettings(_Section):
    """`[signing]`: the key release files are signed with, and an optional GPG key.

    Without `key_file` nothing is signed. The secret key is a minisign key file
    (`isorunner keygen`); its password, if it has one, is `key_password` (best as
    `key_password_file`). `gpg_key` adds a detached GPG signature (`<iso>.sig`) made with
    that key from `gpg_homedir`, its passphrase from `gpg_passphrase(_file)`.
    """

    key_file: Path | None = None
    key_password: SecretStr | None = None
    gpg_key: (
        Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[0-9A-Za-z@._+<>-]+$")] | None
    ) = None
    gpg_homedir: Path | None = None
    gpg_passphrase: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("key_password", "gpg_passphrase"))

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if self.key_password is not None and self.key_file is None:
            raise ValueError("key_password is given but key_file is not")
        if (self.gpg_passphrase is not None or self.gpg_homedir is not None) and not self.gpg_key:
            raise ValueError("gpg_homedir/gpg_passphrase are given but gpg_key is not")
        return self


class RepoSettings(_Section):
    """One `[[repos]]` entry: a repository to build, what triggers it, where packages come from.

    `package_source`, `mirrors`, `archive_date` and `extra_repos` override the
    `[packages]` defaults for this repository's builds; unset ones inherit them.
    """

    forge: Forge
    name: Annotated[str, Field(min_length=3, pattern=r"^[^/\s]+(/[^/\s]+)+$")]
    branches: tuple[str, ...] = ("main",)
    release_tags: tuple[str, ...] = ("v*",)
    pull_requests: bool = True
    boot_test: RepoBootTest = RepoBootTest()
    rebuild_check: bool = True
    package_source: PackageSource | None = None
    mirrors: Annotated[tuple[str, ...] | None, Field(max_length=16)] = None
    archive_date: str | None = None
    extra_repos: tuple[ExtraRepoSettings, ...] | None = None

    @field_validator("archive_date")
    @classmethod
    def _archive_date(cls, value: str | None) -> str | None:
        return check_archive_date(value)

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_mirrors(value)

    def matches_branch(self, branch: str) -> bool:
        """Whether a push to `branch` triggers a build."""
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.branches)


class Settings(BaseSettings):
    """The whole configuration, one section per TOML table."""

    model_config = SettingsConfigDict(
        env_prefix="ISORUNNER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    sandbox: SandboxSettings = SandboxSettings()
    github: GitHubSettings = GitHubSettings()
    gitlab: GitLabSettings = GitLabSettings()
    boot_test: BootTestSettings = BootTestSettings()
    packages: PackagesSettings = PackagesSettings()
    signing: SigningSettings = SigningSettings()
    repos: tuple[RepoSettings, ...] = ()

    @model_validator(mode="after")
    def _forges_configured(self) -> Self:
        forges = {repo.forge for repo in self.repos}
        if Forge.GITHUB in forges and self.github.webhook_secret is None:
            raise ValueError("a GitHub repo is configured but github.webhook_secret is not")
        if Forge.GITLAB in forges and (
            self.gitlab.webhook_secret is None and self.gitlab.signing_token is None
        ):
            raise ValueError(
                "a GitLab repo is configured but neither gitlab.webhook_secret "
                "nor gitlab.signing_token is"
            )
        seen: set[tuple[Forge, str]] = set()
        packages = self.packages
        for repo in self.repos:
            key = (repo.forge, repo.name.lower())
            if key in seen:
                raise ValueError(f"repo {repo.forge}:{repo.name} is listed twice")
            seen.add(key)
            where = f"repos {repo.forge}:{repo.name}"
            check_source(
                repo.package_source or packages.package_source,
                repo.mirrors if repo.mirrors is not None else packages.mirrors,
                repo.archive_date or packages.archive_date,
                where,
            )
            check_extra(
                repo.extra_repos if repo.extra_repos is not None else packages.extra_repos,
                packages.repositories,
                where,
            )
        return self


def load_settings(path: Path) -> Settings:
    """Load the TOML file at `path`, then apply `ISORUNNER_*` environment overrides.

    Args:
        path: The TOML file. It must exist.

    Returns:
        The validated settings.

    Raises:
        ConfigError: The file is missing or unreadable, is not TOML, or a key is
            wrong; the message names the file and each bad key, never a value.
    """
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist; copy isorunner.example.toml there "
            "or pass --config PATH"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    try:
        return _FromFile()
    except ValidationError as exc:
        raise ConfigError(describe_errors(path, exc)) from None


def environment_settings() -> Settings:
    """The defaults with `ISORUNNER_*` environment overrides, without a file.

    For `isorunner build` without a config file.

    Raises:
        ConfigError: An environment value is wrong; named by key, never echoed.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_errors(Path("(environment)"), exc)) from None


def describe_errors(path: Path, exc: ValidationError) -> str:
    """Render validation errors as `path: key: problem` lines, without input values."""
    lines = [f"{path}: {exc.error_count()} problem(s) in the configuration:"]
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)
