"""Tests for runner.settings: file, environment, secret files, and error messages."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from runner.exceptions import ConfigError
from runner.settings import Settings, environment_settings, load_settings
from webhooks.build import Forge

EXAMPLE = Path(__file__).parents[2] / "isorunner.example.toml"

GOOD = """
[server]
public_url = "https://ci.example.org/"
port = 8080

[github]
webhook_secret = "s3cret-hook-for-tests"
token = "ghp_notarealtoken"

[[repos]]
forge = "github"
name = "example/archlive"
"""


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The developer's ISORUNNER_* variables do not leak into these tests."""
    for key in list(os.environ):
        if key.startswith("ISORUNNER_"):
            monkeypatch.delenv(key)
    return monkeypatch


def write(tmp_path: Path, text: str) -> Path:
    """Write `text` as the config file and return its path."""
    path = tmp_path / "isorunner.toml"
    path.write_text(text)
    return path


def test_load_settings_reads_sections_and_repos(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """A valid file yields typed sections, defaults and repo rules."""
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.server.port == 8080
    assert settings.server.base_url == "https://ci.example.org"
    assert settings.github.webhook_secret is not None
    assert settings.github.webhook_secret.get_secret_value() == "s3cret-hook-for-tests"
    assert settings.repos[0].forge is Forge.GITHUB
    assert settings.repos[0].branches == ("main",)
    assert settings.sandbox.base == Path("/var/lib/isorunner/sandbox/base")


def test_load_settings_environment_overrides_file(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """`ISORUNNER_SECTION__KEY` beats the value in the file."""
    no_env.setenv("ISORUNNER_SERVER__PORT", "9999")
    no_env.setenv("ISORUNNER_GITHUB__TOKEN", "ghp_from-the-environment")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.server.port == 9999
    assert settings.github.token is not None
    assert settings.github.token.get_secret_value() == "ghp_from-the-environment"


def test_load_settings_reads_secret_from_file(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """A `*_file` key loads the secret from that file without its trailing newline."""
    secret = tmp_path / "hook-secret"
    secret.write_text("from-a-secret-file\n")
    text = GOOD.replace(
        'webhook_secret = "s3cret-hook-for-tests"', f'webhook_secret_file = "{secret}"'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.github.webhook_secret is not None
    assert settings.github.webhook_secret.get_secret_value() == "from-a-secret-file"


def test_load_settings_refuses_inline_and_file_together(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """Giving a secret both inline and as a file is an error naming both keys."""
    secret = tmp_path / "token"
    secret.write_text("x")
    text = GOOD.replace('token = "ghp_notarealtoken"', f'token = "ghp_x"\ntoken_file = "{secret}"')
    with pytest.raises(ConfigError, match="either token or token_file"):
        load_settings(write(tmp_path, text))


def test_load_settings_missing_secret_file_names_key(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """An unreadable secret file is reported with its key and path."""
    text = GOOD.replace('token = "ghp_notarealtoken"', 'token_file = "/nonexistent/token"')
    with pytest.raises(ConfigError, match=r"github: .*token_file: cannot read /nonexistent/token"):
        load_settings(write(tmp_path, text))


def test_load_settings_error_never_echoes_secret(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """A wrongly typed secret is reported by key, and its value appears nowhere."""
    text = GOOD.replace('token = "ghp_notarealtoken"', "token = 1234567890987")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert "github.token" in str(caught.value)
    assert "1234567890987" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_load_settings_unknown_key_is_named(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """A misspelt key is an error that names it."""
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(write(tmp_path, GOOD.replace("port = 8080", "prot = 8080")))


def test_load_settings_missing_file_says_what_to_do(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    """A missing config file points at the example and --config."""
    with pytest.raises(ConfigError, match=r"does not exist; copy isorunner.example.toml"):
        load_settings(tmp_path / "absent.toml")


def test_load_settings_bad_toml_names_file(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """A syntax error is reported as invalid TOML with the file name."""
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match=f"{path} is not valid TOML"):
        load_settings(path)


def test_settings_repo_without_webhook_secret_is_refused(no_env: pytest.MonkeyPatch) -> None:
    """A GitHub repo needs the GitHub webhook secret: intake must never run unsigned."""
    with pytest.raises(ValueError, match=r"github\.webhook_secret is not"):
        Settings(repos=({"forge": "github", "name": "a/b"},))


def test_settings_gitlab_signing_token_must_be_whsec(no_env: pytest.MonkeyPatch) -> None:
    """A GitLab signing token that is not `whsec_…` is refused with a hint."""
    with pytest.raises(ValueError, match="starts with whsec_"):
        Settings(gitlab={"signing_token": "not-a-signing-token"})


def test_settings_warning_must_precede_timeout(no_env: pytest.MonkeyPatch) -> None:
    """The warning comes before the timeout or the config is refused."""
    with pytest.raises(ValueError, match="warning_seconds must be smaller"):
        Settings(sandbox={"timeout_seconds": 100, "warning_seconds": 100})


def test_settings_duplicate_repo_is_refused(no_env: pytest.MonkeyPatch) -> None:
    """The same repository listed twice (in any case) is refused."""
    with pytest.raises(ValueError, match="listed twice"):
        Settings(
            github={"webhook_secret": "a-webhook-secret-of-32-bytes-xyz"},
            repos=(
                {"forge": "github", "name": "a/b"},
                {"forge": "github", "name": "A/B"},
            ),
        )


def test_settings_github_app_needs_key(no_env: pytest.MonkeyPatch) -> None:
    """`app_id` without `private_key_file` is refused."""
    with pytest.raises(ValueError, match="go together"):
        Settings(github={"app_id": 1})


def test_settings_refuse_a_size_that_is_not_one() -> None:
    """A memory limit that is not a size is refused with an example of one."""
    with pytest.raises(ValueError, match=r"expected e\.g\. 8G"):
        Settings(sandbox={"memory_limit": "lots"})


def test_example_config_lists_every_key() -> None:
    """Every settings key appears (commented) in isorunner.example.toml."""
    text = EXAMPLE.read_text()
    tomllib.loads(text)
    for section, model in Settings.model_fields.items():
        assert f"[{section}]" in text or f"[[{section}]]" in text
        annotation = model.annotation
        fields = getattr(annotation, "model_fields", None)
        if fields is None:
            continue
        for key in fields:
            assert f"# {key} " in text or f"# {key}_file " in text, f"{section}.{key} undocumented"


def test_example_config_uncommented_loads(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    """The example with its key lines uncommented, plus secrets from the environment, loads."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        stripped = line.removeprefix("# ")
        is_key = line.startswith("# ") and (" = " in stripped or stripped.startswith("[["))
        if is_key and "_file =" not in stripped and not stripped.startswith("app_id"):
            lines.append(stripped.split("  #")[0])
        else:
            lines.append(line)
    no_env.setenv("ISORUNNER_GITHUB__WEBHOOK_SECRET", "from-the-environment")
    settings = load_settings(write(tmp_path, "\n".join(lines)))
    assert settings.repos[0].name == "example/archlive"
    assert settings.server.base_url == "https://ci.example.org"
    assert settings.sandbox.memory_limit == "8G"


SECRET_KEYS = [
    ("server", "admin_token"),
    ("github", "webhook_secret"),
    ("github", "token"),
    ("gitlab", "webhook_secret"),
    ("gitlab", "signing_token"),
    ("gitlab", "token"),
]


@pytest.mark.parametrize(("section", "key"), SECRET_KEYS)
@pytest.mark.parametrize("value", ["\n", "   \t  \n", "fifteen-bytes-x", "  short-secret  \n"])
def test_load_settings_refuses_a_short_secret_file_naming_the_key(
    tmp_path: Path, no_env: pytest.MonkeyPatch, section: str, key: str, value: str
) -> None:
    """Every secret file holding under 16 bytes once stripped stops the start, named by key."""
    secret = tmp_path / "secret"
    secret.write_text(value)
    text = f'[{section}]\n{key}_file = "{secret}"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert f"{section}.{key}: is empty or shorter than 16 bytes" in message
    if value.strip():
        assert value.strip() not in message


@pytest.mark.parametrize(("section", "key"), SECRET_KEYS)
def test_environment_settings_refuse_a_short_secret_without_echoing_it(
    no_env: pytest.MonkeyPatch, section: str, key: str
) -> None:
    """A short secret from the environment is named by key and never shown."""
    no_env.setenv(f"ISORUNNER_{section.upper()}__{key.upper()}", "whsec_tiny-x")
    with pytest.raises(ConfigError) as caught:
        environment_settings()
    assert f"{section}.{key}" in str(caught.value)
    assert "tiny-x" not in str(caught.value)


def test_settings_take_a_secret_of_16_bytes(no_env: pytest.MonkeyPatch) -> None:
    """A secret of exactly 16 bytes after stripping is long enough."""
    settings = Settings(server={"admin_token": " 0123456789abcdef\n"})
    assert settings.server.admin_token is not None
