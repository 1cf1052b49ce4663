"""Tests for `isorunner init` (runner.starter), run through the real CLI entry point.

The starter config is loaded back with `load_settings`, its keys are checked against
isorunner.example.toml, and the secrets' files, modes and absence from the terminal
are checked on disk and in the captured output.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.__main__ import main
from runner.exceptions import ConfigError
from runner.settings import load_settings
from runner.starter import SECRET_FILES, SECRETS_DIR, RepoSpec, parse_public_url, parse_repo
from webhooks.build import Forge

EXAMPLE = Path(__file__).parents[2] / "isorunner.example.toml"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ISORUNNER_* variable from the developer's shell leaks into loading."""
    for name in list(os.environ):
        if name.startswith("ISORUNNER_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """A umask that would leave new files world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def init(config: Path, *args: str) -> int:
    """Run `isorunner init --config CONFIG ARGS…`."""
    return main(["init", "--config", str(config), *args])


def secrets_of(config: Path) -> dict[str, str]:
    """The generated secrets beside `config`, by file name."""
    return {name: (config.parent / SECRETS_DIR / name).read_text().strip() for name in SECRET_FILES}


def test_init_writes_a_config_that_loads_with_its_secret_files(
    tmp_path: Path, no_env: pytest.MonkeyPatch, umask_zero: None
) -> None:
    """The starter loads with load_settings; secrets are 0600 files in a 0700 directory."""
    config = tmp_path / "isorunner.toml"
    assert (
        init(
            config,
            "--repo",
            "github:example/archlive",
            "--repo",
            "gitlab:group/sub/live",
            "--public-url",
            "https://ci.example.org/",
        )
        == 0
    )
    settings = load_settings(config)
    values = secrets_of(config)
    assert settings.server.base_url == "https://ci.example.org"
    assert settings.github.webhook_secret is not None
    assert settings.github.webhook_secret.get_secret_value() == values["github-webhook-secret"]
    assert settings.gitlab.webhook_secret is not None
    assert settings.gitlab.webhook_secret.get_secret_value() == values["gitlab-webhook-secret"]
    assert settings.server.admin_token is not None
    assert settings.server.admin_token.get_secret_value() == values["admin-token"]
    assert [(r.forge, r.name) for r in settings.repos] == [
        (Forge.GITHUB, "example/archlive"),
        (Forge.GITLAB, "group/sub/live"),
    ]
    assert len(set(values.values())) == 3
    for value in values.values():
        assert len(value) >= 43  # 32 random bytes, URL-safe base64
    directory = tmp_path / SECRETS_DIR
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in SECRET_FILES:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o644


def test_init_config_uses_only_documented_keys(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """Every key of the starter (active or commented) is one isorunner.example.toml lists."""
    config = tmp_path / "isorunner.toml"
    init(config, "--repo", "github:a/b", "--gitlab-url", "https://git.example.com")
    text = config.read_text()
    example = EXAMPLE.read_text()
    data = tomllib.loads(text)
    keys = [key for section in ("server", "github", "gitlab") for key in data[section]]
    keys += list(data["repos"][0])
    keys += [line.split()[1] for line in text.splitlines() if line.startswith("# token_file")]
    assert "url" in data["gitlab"]
    for key in keys:
        assert f"# {key} " in example, key


def test_init_prints_what_to_enter_on_each_forge_and_never_a_secret(
    tmp_path: Path, no_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Webhook URL, content type, secret file and events per repo; no secret value."""
    config = tmp_path / "isorunner.toml"
    init(
        config,
        "--repo",
        "github:example/archlive",
        "--repo",
        "gitlab:group/live",
        "--public-url",
        "https://ci.example.org",
    )
    out = capsys.readouterr().out
    secret_dir = tmp_path / SECRETS_DIR
    for line in (
        "GitHub example/archlive: https://github.com/example/archlive/settings/hooks/new",
        "  Payload URL:   https://ci.example.org/webhooks/github",
        "  Content type:  application/json",
        f"  Secret:        the contents of {secret_dir}/github-webhook-secret",
        "  Events:        Let me select individual events: Pushes, Pull requests",
        "GitLab group/live: https://gitlab.com/group/live/-/hooks",
        "  URL:           https://ci.example.org/webhooks/gitlab",
        f"  Secret token:  the contents of {secret_dir}/gitlab-webhook-secret",
        "  Trigger:       Push events, Tag push events, Merge request events",
    ):
        assert line in out.splitlines()
    assert f"{secret_dir}/github-token" in out
    for value in secrets_of(config).values():
        assert value not in out
        assert value not in config.read_text()


def test_init_without_repos_says_to_add_them_and_warns_about_localhost(
    tmp_path: Path, no_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --repo still loads; the next steps say to add repos and set the public URL."""
    config = tmp_path / "isorunner.toml"
    assert init(config) == 0
    assert load_settings(config).repos == ()
    out = capsys.readouterr().out
    assert "Add your repositories to" in out
    assert "Forges cannot reach http://127.0.0.1:8000" in out


def test_init_refuses_to_overwrite_without_force_and_keeps_secrets_with_it(
    tmp_path: Path, no_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second init fails and changes nothing; --force rewrites the config, same secrets."""
    config = tmp_path / "isorunner.toml"
    init(config, "--repo", "github:a/b")
    before, secrets_before = config.read_text(), secrets_of(config)
    assert init(config, "--repo", "github:c/d") == 2
    assert "exists: edit it, or pass --force" in capsys.readouterr().err
    assert config.read_text() == before
    assert init(config, "--repo", "github:c/d", "--force") == 0
    assert load_settings(config).repos[0].name == "c/d"
    assert secrets_of(config) == secrets_before


def test_init_tightens_a_kept_secret_and_refuses_a_symlinked_one(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """An existing secret readable by others becomes 0600; a symlink is refused."""
    config = tmp_path / "isorunner.toml"
    directory = tmp_path / SECRETS_DIR
    directory.mkdir()
    loose = directory / "admin-token"
    loose.write_text("kept-admin-token-value\n")
    loose.chmod(0o644)
    assert init(config) == 0
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert load_settings(config).server.admin_token is not None
    (directory / "github-webhook-secret").unlink()
    (directory / "github-webhook-secret").symlink_to(tmp_path / "elsewhere")
    assert init(config, "--force") == 2
    assert not (tmp_path / "elsewhere").exists()


def test_init_quotes_a_strange_directory_name_in_toml(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """Quotes and backslashes in the path are escaped: the file still loads."""
    directory = tmp_path / 'we"ird\\dir'
    directory.mkdir()
    config = directory / "isorunner.toml"
    assert init(config, "--repo", "github:a/b") == 0
    settings = load_settings(config)
    assert settings.github.webhook_secret is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("bitbucket:a/b", "write github:OWNER/NAME or gitlab:GROUP/PROJECT"),
        ("github:a/b/c", "github:OWNER/NAME"),
        ("github:ab", "github:OWNER/NAME"),
        ("github:-a/b", "github:OWNER/NAME"),
        ("gitlab:project", "gitlab:GROUP/PROJECT"),
        ("gitlab:a//b", "gitlab:GROUP/PROJECT"),
        ("github:a/b\n[server]", "github:OWNER/NAME"),
        ("gitlab:" + "a/" * 100_000 + "!", "longer than 255"),
    ],
)
def test_parse_repo_refuses_what_the_forge_would_not_accept(text: str, problem: str) -> None:
    """Unknown forges, wrong shapes, injected TOML and huge input are refused by name."""
    with pytest.raises(ConfigError, match=problem):
        parse_repo(text)


def test_parse_repo_refuses_near_misses_and_accepts_gitlab_subgroups() -> None:
    """Names just past the rules are refused; dotted GitLab subgroup paths are fine."""
    with pytest.raises(ConfigError):
        parse_repo("gitlab:" + "a." * 123 + "/")
    with pytest.raises(ConfigError):
        parse_repo("github:" + "a" * 40 + "/b")
    assert parse_repo("gitlab:Group.Name/sub_group/my-project.git") == RepoSpec(
        Forge.GITLAB, "Group.Name/sub_group/my-project.git"
    )
    assert parse_repo("github:" + "a" * 39 + "/b") == RepoSpec(Forge.GITHUB, "a" * 39 + "/b")


@pytest.mark.parametrize(
    "text", ["ftp://ci.example.org", "https://user:pw@ci.example.org", "https://x/?a=1", "nope"]
)
def test_parse_public_url_refuses_what_a_forge_cannot_use(text: str) -> None:
    """Only plain http(s) URLs: no other scheme, credentials or query."""
    with pytest.raises(ConfigError, match="--public-url"):
        parse_public_url(text)


def test_init_refuses_a_repo_given_twice(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """The same repository twice (any case) is refused before any file is written."""
    config = tmp_path / "isorunner.toml"
    assert init(config, "--repo", "github:a/b", "--repo", "github:A/B") == 2
    assert not config.exists()
    assert not (tmp_path / SECRETS_DIR).exists()
