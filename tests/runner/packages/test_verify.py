"""Tests of runner.packages.verify: pacman's signature rules over gpg's status output."""

from __future__ import annotations

import pytest

from runner.packages.verify import disabled_keys, signature_verdict

FPR = "67C5382B01C837199E941D6E9A8EB72A3C735429"
GOOD = (
    "[GNUPG:] NEWSIG\n"
    f"[GNUPG:] KEY_CONSIDERED {FPR} 0\n"
    "[GNUPG:] GOODSIG 9A8EB72A3C735429 packager <p@x>\n"
    f"[GNUPG:] VALIDSIG {FPR} 2026-12-07 1796639799 0 4 0 22 8 00 {FPR}\n"
)
NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("trust", "trust_all", "verdict"),
    [
        ("TRUST_FULLY 0 pgp", False, None),
        ("TRUST_ULTIMATE 0 pgp", False, None),
        ("TRUST_MARGINAL 0 pgp", False, 'signature from "packager <p@x>" is marginal trust'),
        ("TRUST_UNDEFINED 0 pgp", False, 'signature from "packager <p@x>" is unknown trust'),
        ("", False, 'signature from "packager <p@x>" is unknown trust'),
        ("TRUST_MARGINAL 0 pgp", True, None),
        ("TRUST_UNDEFINED 0 pgp", True, None),
        ("TRUST_NEVER 0 pgp", True, 'signature from "packager <p@x>" should never be trusted'),
    ],
)
def test_signature_verdict_applies_pacmans_trust_rules(
    trust: str, trust_all: bool, verdict: str | None
) -> None:
    """A good signature needs full trust; TrustAll also takes marginal and unknown, not never."""
    status = GOOD + (f"[GNUPG:] {trust}\n" if trust else "")
    assert signature_verdict(status, trust_all=trust_all, disabled=NONE) == verdict


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (
            "[GNUPG:] BADSIG 9A8E packager <p@x>\n[GNUPG:] TRUST_FULLY 0 pgp\n",
            'signature from "packager <p@x>" is invalid',
        ),
        (
            f"[GNUPG:] ERRSIG 9A8EB72A3C735429 22 8 00 1796639799 9 {FPR}\n"
            "[GNUPG:] NO_PUBKEY 9A8EB72A3C735429\n",
            'key "9A8EB72A3C735429" is unknown: it is not in the keyring',
        ),
        (
            "[GNUPG:] REVKEYSIG 9A8E packager <p@x>\n"
            f"[GNUPG:] VALIDSIG {FPR} x 0 0 4 0 22 8 00 {FPR}\n[GNUPG:] TRUST_FULLY 0 pgp\n",
            'signature from "packager <p@x>" is invalid: the key is revoked',
        ),
        (
            "[GNUPG:] EXPSIG 9A8E packager <p@x>\n"
            f"[GNUPG:] VALIDSIG {FPR} x 0 0 4 0 22 8 00 {FPR}\n[GNUPG:] TRUST_FULLY 0 pgp\n",
            'signature from "packager <p@x>" is expired',
        ),
        ("[GNUPG:] NODATA 1\n", "no valid signature"),
        ("", "no valid signature"),
    ],
)
def test_signature_verdict_refuses_what_pacman_refuses(status: str, verdict: str) -> None:
    """Bad, unknown-key, revoked, expired and absent signatures are refused with a reason."""
    assert signature_verdict(status, trust_all=True, disabled=NONE) == verdict


def test_signature_verdict_accepts_a_key_expired_since_signing() -> None:
    """A valid signature whose key expired later counts, as in libalpm (KEY_EXPIRED)."""
    status = (
        "[GNUPG:] EXPKEYSIG 9A8E packager <p@x>\n"
        f"[GNUPG:] VALIDSIG {FPR} x 0 0 4 0 22 8 00 {FPR}\n[GNUPG:] TRUST_FULLY 0 pgp\n"
    )
    assert signature_verdict(status, trust_all=False, disabled=NONE) is None


def test_signature_verdict_refuses_a_disabled_key() -> None:
    """A signature by a disabled key (pacman-key disables revoked packagers) is refused."""
    status = GOOD + "[GNUPG:] TRUST_FULLY 0 pgp\n"
    assert signature_verdict(status, trust_all=False, disabled=frozenset({FPR})) == (
        'signature from "packager <p@x>" is from a disabled key'
    )


def test_signature_verdict_ignores_lines_that_are_not_status() -> None:
    """Noise that does not start with [GNUPG:] cannot forge a trust line."""
    status = GOOD + "TRUST_FULLY\n[GNUPG:]\n"
    assert signature_verdict(status, trust_all=False, disabled=NONE) == (
        'signature from "packager <p@x>" is unknown trust'
    )


def test_disabled_keys_reads_the_capability_field() -> None:
    """Primary keys with D in their capabilities are disabled; others are not."""
    colons = (
        "pub:f:255:22:AAAA:1:::-:::scSC:::::ed25519:::0:\n"
        "fpr:::::::::AAAAFPR:\n"
        "pub:-:255:22:BBBB:1:::-:::scSCD:::::ed25519:::0:\n"
        "fpr:::::::::BBBBFPR:\n"
        "sub:-:255:22:CCCC:1::::::s:::::ed25519::\n"
        "fpr:::::::::CCCCFPR:\n"
    )
    assert disabled_keys(colons) == frozenset({"BBBBFPR"})
