"""Tests for the signing pieces of runner.wiring and `isorunner check`'s signing finding."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.check import check_signing
from runner.publish.exceptions import KeyFileError
from runner.publish.keys import write_secret_key
from runner.publish.minisign import KdfLimits, generate_secret_key
from runner.settings import RepoSettings, Settings, SigningSettings
from runner.wiring import (
    gpg_signer,
    load_signer,
    rebuild_check_rule,
    secrets_of,
    signing_key_of,
)
from tests.runner.store.samples import make_request
from webhooks.build import Forge, RefKind

LIMITS = KdfLimits(opslimit=524288, memlimit=16777216)


@pytest.mark.anyio
async def test_load_signer_decrypts_the_configured_key(tmp_path: Path) -> None:
    """key_file and key_password give a signer whose public key is the file's."""
    key = generate_secret_key()
    write_secret_key(tmp_path / "k.key", key, password=b"pw", limits=LIMITS)
    signing = SigningSettings(key_file=tmp_path / "k.key", key_password=SecretStr("pw"))
    signer = await load_signer(signing)
    assert signer is not None
    assert signer.public_key == key.public_key()
    shown = signing_key_of(signer)
    assert shown is not None
    assert shown.key_id == key.public_key().id_text
    assert shown.text == key.public_key().file_text()


@pytest.mark.anyio
async def test_load_signer_without_a_key_signs_nothing() -> None:
    """No key_file: no signer, and nothing shown."""
    assert await load_signer(SigningSettings()) is None
    assert signing_key_of(None) is None


@pytest.mark.anyio
async def test_check_signing_names_a_wrong_password(tmp_path: Path) -> None:
    """`isorunner check` fails the signing key with the file and the reason, not the password."""
    write_secret_key(tmp_path / "k.key", generate_secret_key(), password=b"pw", limits=LIMITS)
    settings = Settings(
        signing=SigningSettings(key_file=tmp_path / "k.key", key_password=SecretStr("guess"))
    )
    finding = await check_signing(settings)
    assert not finding.ok
    assert "wrong password" in finding.message
    assert "guess" not in finding.message
    with pytest.raises(KeyFileError):
        await load_signer(settings.signing)
    assert (await check_signing(Settings())).message == "none configured: builds are not signed"


def test_signing_secrets_are_redacted() -> None:
    """The key's password and the GPG passphrase are among the secrets kept out of logs."""
    settings = Settings(
        signing=SigningSettings(
            key_file=Path("/k"),
            key_password=SecretStr("a"),
            gpg_key="0123456789ABCDEF",
            gpg_passphrase=SecretStr("b"),
        )
    )
    values = {s.get_secret_value() for s in secrets_of(settings) if s is not None}
    assert {"a", "b"} <= values
    signer = gpg_signer(settings.signing)
    assert signer is not None
    assert signer.key == "0123456789ABCDEF"


def test_rebuild_check_rule_follows_each_repo() -> None:
    """Each repo's rebuild_check is honoured, matched case-insensitively; the default is on."""
    settings = Settings(
        github={"webhook_secret": "a-webhook-secret-of-32-bytes-000"},
        repos=(
            RepoSettings(forge=Forge.GITHUB, name="octo/Fast", rebuild_check=False),
            RepoSettings(forge=Forge.GITHUB, name="octo/archlive"),
        ),
    )
    rule = rebuild_check_rule(settings)
    tag = {"ref": "refs/tags/v1", "kind": RefKind.TAG}
    assert rule(make_request(repo="octo/fast", **tag)) is False
    assert rule(make_request(repo="octo/archlive", **tag)) is True
