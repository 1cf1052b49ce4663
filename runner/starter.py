"""`isorunner init`: a starter configuration, its secrets, and what to tell each forge.

The pure core (`parse_repo`, `parse_public_url`, `render_config`, `forge_instructions`)
turns the command line into the config text and the instructions; `write_starter` is the
I/O shell. It writes `isorunner.toml` and, in a directory of mode 0700 beside it
(`isorunner-secrets/`), a generated GitHub webhook secret, GitLab webhook token and admin
token (32 random bytes each, files of mode 0600) that the config references with
`*_file` keys. Secrets are never printed: the instructions name their files.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pydantic import AnyHttpUrl, ValidationError

from runner.exceptions import ConfigError
from webhooks.build import Forge

SECRETS_DIR = "isorunner-secrets"
SECRET_BYTES = 32
#: The generated secrets: file name → (section, key) in the config.
SECRET_FILES = {
    "github-webhook-secret": ("github", "webhook_secret_file"),
    "gitlab-webhook-secret": ("gitlab", "webhook_secret_file"),
    "admin-token": ("server", "admin_token_file"),
}
FORGE_NAMES = {Forge.GITHUB: "GitHub", Forge.GITLAB: "GitLab"}
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_GITLAB_URL = "https://gitlab.com"
MAX_REPO_CHARS = 255
# GitHub: OWNER/NAME. GitLab: GROUP[/SUBGROUP…]/PROJECT. One character class per
# segment and a literal separator: matching is linear in the input's length.
_GITHUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
_GITLAB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")


@dataclass(frozen=True, slots=True)
class RepoSpec:
    """A repository given on the command line as `FORGE:NAME`."""

    forge: Forge
    name: str


@dataclass(frozen=True, slots=True)
class Starter:
    """Everything the starter configuration says, before any file is written."""

    config: Path
    secrets_dir: Path
    public_url: str
    gitlab_url: str
    repos: tuple[RepoSpec, ...]

    def secret_path(self, name: str) -> Path:
        """Where the generated secret `name` (a key of SECRET_FILES) lives."""
        return self.secrets_dir / name


def parse_repo(text: str) -> RepoSpec:
    """Parse `github:OWNER/NAME` or `gitlab:GROUP/…/PROJECT`.

    Raises:
        ConfigError: Unknown forge, or a name that forge would not accept.
    """
    if len(text) > MAX_REPO_CHARS:
        raise ConfigError(f"--repo: longer than {MAX_REPO_CHARS} characters")
    forge_text, sep, name = text.partition(":")
    try:
        forge = Forge(forge_text)
    except ValueError:
        raise ConfigError(
            "--repo: write github:OWNER/NAME or gitlab:GROUP/PROJECT, "
            f"not {text[:40]!r}{'…' if len(text) > 40 else ''}"
        ) from None
    pattern = _GITHUB_NAME if forge is Forge.GITHUB else _GITLAB_NAME
    if not sep or not pattern.fullmatch(name):
        shape = "OWNER/NAME" if forge is Forge.GITHUB else "GROUP/PROJECT (subgroups allowed)"
        raise ConfigError(f"--repo: a {forge.value} repository is written {forge.value}:{shape}")
    return RepoSpec(forge, name)


def parse_public_url(text: str, option: str = "--public-url") -> str:
    """An http(s) URL without credentials, query or fragment, without a trailing slash.

    Raises:
        ConfigError: Not such a URL.
    """
    try:
        url = AnyHttpUrl(text)
    except ValidationError:
        raise ConfigError(f"{option}: not an http(s) URL") from None
    if url.username or url.password or url.query or url.fragment:
        raise ConfigError(f"{option}: no user, password, query or fragment, please")
    return str(url).rstrip("/")


def _toml_string(value: str) -> str:
    """A TOML basic string holding `value` (escapes quotes, backslashes, controls)."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_config(starter: Starter) -> str:
    """The text of the starter `isorunner.toml`."""
    path = starter.secret_path
    github_token = _toml_string(str(path("github-token")))
    gitlab_token = _toml_string(str(path("gitlab-token")))
    lines = [
        "# isorunner configuration, written by `isorunner init`. Every key, with its",
        "# default: isorunner.example.toml. Secrets live in files (mode 0600) in",
        f"# {starter.secrets_dir}; never paste one here.",
        "",
        "[server]",
        "# Forges and commit statuses link here; isorunner listens on host:port below",
        "# (put a TLS-terminating proxy for this URL in front of it).",
        f"public_url = {_toml_string(starter.public_url)}",
        'host = "127.0.0.1"',
        "port = 8000",
        "# `Authorization: Bearer <this file's contents>` for /api/builds/{id}/cancel and retry.",
        f"admin_token_file = {_toml_string(str(path('admin-token')))}",
        "",
        "[github]",
        f"webhook_secret_file = {_toml_string(str(path('github-webhook-secret')))}",
        "# API access for statuses, archives and releases: a fine-grained token with",
        "# Commit statuses: write and Contents: write, in this file (mode 0600):",
        f"# token_file = {github_token}",
        "",
        "[gitlab]",
    ]
    if starter.gitlab_url != DEFAULT_GITLAB_URL:
        lines.append(f"url = {_toml_string(starter.gitlab_url)}")
    lines += [
        f"webhook_secret_file = {_toml_string(str(path('gitlab-webhook-secret')))}",
        "# API access: a project or personal access token (scope api, role Developer):",
        f"# token_file = {gitlab_token}",
    ]
    if not starter.repos:
        lines += [
            "",
            "# The repositories to build, one table each (see isorunner.example.toml):",
            "# [[repos]]",
            '# forge = "github"',
            '# name = "example/archlive"',
        ]
    for repo in starter.repos:
        lines += [
            "",
            "[[repos]]",
            f"forge = {_toml_string(repo.forge.value)}",
            f"name = {_toml_string(repo.name)}",
            'branches = ["main"]              # glob patterns',
            'release_tags = ["v*"]            # tags that publish a release',
        ]
    return "\n".join(lines) + "\n"


def forge_instructions(starter: Starter) -> str:
    """What to enter on each repository's webhook page, and what to do next."""
    out: list[str] = []
    for repo in starter.repos:
        secret = starter.secret_path(f"{repo.forge.value}-webhook-secret")
        if repo.forge is Forge.GITHUB:
            out += [
                f"GitHub {repo.name}: https://github.com/{repo.name}/settings/hooks/new",
                f"  Payload URL:   {starter.public_url}/webhooks/github",
                "  Content type:  application/json",
                f"  Secret:        the contents of {secret}",
                "  Events:        Let me select individual events: Pushes, Pull requests",
                "",
            ]
        else:
            out += [
                f"GitLab {repo.name}: {starter.gitlab_url}/{repo.name}/-/hooks",
                f"  URL:           {starter.public_url}/webhooks/gitlab",
                "  Content type:  application/json (GitLab sends no other)",
                f"  Secret token:  the contents of {secret}",
                "  Trigger:       Push events, Tag push events, Merge request events",
                "",
            ]
    forges = {repo.forge for repo in starter.repos}
    steps = []
    if not starter.repos:
        steps.append(
            f"Add your repositories to {starter.config} ([[repos]]), or run "
            "`isorunner init --force --repo github:OWNER/NAME` (your secrets are kept)."
        )
    if starter.public_url == DEFAULT_PUBLIC_URL:
        steps.append(
            f"Forges cannot reach {DEFAULT_PUBLIC_URL}: set server.public_url to the "
            "address they use (or pass --public-url)."
        )
    for forge, scope in (
        (Forge.GITHUB, "Commit statuses: write, Contents: write"),
        (Forge.GITLAB, "scope api, role Developer"),
    ):
        if forge in forges:
            token = starter.secret_path(f"{forge.value}-token")
            steps.append(
                f"Put a {FORGE_NAMES[forge]} API token ({scope}) in {token} "
                f"(install -m 0600 /dev/stdin {token}) and uncomment "
                f"{forge.value}.token_file in {starter.config}."
            )
    steps.append(
        f"Check with `isorunner check --config {starter.config}`, then serve "
        "(scripts/run, or `isorunner serve`)."
    )
    out.append("Next:")
    out += [f"  {number}. {step}" for number, step in enumerate(steps, start=1)]
    return "\n".join(out) + "\n"


def _write_secret(path: Path) -> bool:
    """Write a new random secret to `path` (mode 0600); keep an existing one.

    Returns:
        True when a new secret was written.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if not path.is_file() or path.is_symlink() or path.stat().st_size == 0:
            raise ConfigError(
                f"{path} exists but is not a non-empty file: remove it and run init again"
            ) from None
        os.chmod(path, 0o600)
        return False
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_urlsafe(SECRET_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def write_starter(starter: Starter, *, force: bool) -> list[str]:
    """Write the secrets (new ones only where none exist) and the config.

    Returns:
        The names of the secrets newly generated.

    Raises:
        ConfigError: The config exists and `force` is false, or a file cannot be written.
    """
    if starter.config.exists() and not force:
        raise ConfigError(
            f"{starter.config} exists: edit it, or pass --force to replace it "
            f"(the secrets in {starter.secrets_dir} are kept)"
        )
    try:
        starter.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(starter.secrets_dir, 0o700)
        created = [name for name in SECRET_FILES if _write_secret(starter.secret_path(name))]
        tmp = starter.config.with_name(starter.config.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_config(starter))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, starter.config)
    except OSError as exc:
        raise ConfigError(f"isorunner init: cannot write {exc.filename}: {exc.strerror}") from exc
    return created


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `isorunner init` on the CLI's subcommands."""
    text = "write a starter isorunner.toml with generated secrets, and say how to set up webhooks"
    init = commands.add_parser("init", help=text, description=text)
    init.add_argument(
        "--config",
        type=Path,
        help="where to write it (default: $ISORUNNER_CONFIG, else ./isorunner.toml)",
    )
    init.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="FORGE:NAME",
        help="a repository to build: github:OWNER/NAME or gitlab:GROUP/PROJECT (repeatable)",
    )
    init.add_argument(
        "--public-url",
        default=DEFAULT_PUBLIC_URL,
        help="the address forges reach isorunner at (default: %(default)s)",
    )
    init.add_argument(
        "--gitlab-url", default=DEFAULT_GITLAB_URL, help="the GitLab instance (default: gitlab.com)"
    )
    init.add_argument("--force", action="store_true", help="replace an existing config file")


def run_init(args: argparse.Namespace, config: Path, out: TextIO | None = None) -> int:
    """`isorunner init`: validate everything, then write the files and print the steps.

    Args:
        args: The parsed `init` options.
        config: Where the config goes (the CLI resolves --config and $ISORUNNER_CONFIG).
        out: Where the instructions go; standard output by default.

    Raises:
        ConfigError: A bad option, an existing config without --force, a write failure.
    """
    repos = tuple(parse_repo(text) for text in args.repo)
    seen: set[tuple[Forge, str]] = set()
    for repo in repos:
        key = (repo.forge, repo.name.lower())
        if key in seen:
            raise ConfigError(f"--repo {repo.forge.value}:{repo.name} is given twice")
        seen.add(key)
    config = Path(os.path.abspath(config))
    starter = Starter(
        config=config,
        secrets_dir=config.parent / SECRETS_DIR,
        public_url=parse_public_url(args.public_url),
        gitlab_url=parse_public_url(args.gitlab_url, "--gitlab-url"),
        repos=repos,
    )
    created = write_starter(starter, force=args.force)
    stream = out if out is not None else sys.stdout
    kept = [name for name in SECRET_FILES if name not in created]
    print(f"Wrote {starter.config}.", file=stream)
    print(
        f"Secrets (readable by you only) in {starter.secrets_dir}/: "
        + ", ".join([*(f"{n} (new)" for n in created), *(f"{n} (kept)" for n in kept)]),
        file=stream,
    )
    print(file=stream)
    print(forge_instructions(starter), end="", file=stream)
    return 0
