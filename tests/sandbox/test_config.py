"""Tests for sandbox.config: size parsing, build ids and SandboxConfig validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.config import SandboxConfig, check_build_id, format_size, parse_size


def _config(**overrides: object) -> SandboxConfig:
    values: dict[str, object] = {"base_dir": Path("/b"), "sandbox_root": Path("/s")}
    values.update(overrides)
    return SandboxConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8G", 8 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5GiB", 3 * 512 * 1024**2),
        ("4096", 4096),
        (" 2k ", 2048),
        ("1T", 1024**4),
        (7, 7),
    ],
)
def test_parse_size_reads_binary_units(text: str | int, expected: int) -> None:
    """Sizes with K/M/G/T suffixes are powers of 1024, plain numbers are bytes."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "8X", "-1", "eight", "8 G B x"])
def test_parse_size_rejects_non_sizes(text: str) -> None:
    """Text that is not a size raises ValueError naming it."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_parse_size_rejects_negative_int() -> None:
    """A negative integer is not a size."""
    with pytest.raises(ValueError, match="negative"):
        parse_size(-5)


@given(st.integers(min_value=0, max_value=1 << 50))
def test_format_size_round_trips_through_parse_size(size: int) -> None:
    """Formatting a size and parsing it back gives the same number of bytes."""
    assert parse_size(format_size(size)) == size


def test_format_size_uses_largest_exact_unit() -> None:
    """8 GiB renders as 8G, the form used in the out-of-memory message."""
    assert format_size(8 << 30) == "8G"
    assert format_size(1536 << 20) == "1536M"
    assert format_size(1000) == "1000"


@pytest.mark.parametrize("build_id", ["a", "42", "build-7-x", "a" * 48])
def test_check_build_id_accepts_safe_names(build_id: str) -> None:
    """Lower-case letters, digits and hyphens up to 48 characters are accepted."""
    assert check_build_id(build_id) == build_id


@pytest.mark.parametrize("build_id", ["", "-a", "A", "a/b", "..", "a_b", "a" * 49, "a b"])
def test_check_build_id_rejects_unsafe_names(build_id: str) -> None:
    """Anything that could escape a path or a machine name is refused."""
    with pytest.raises(ValueError, match="build id"):
        check_build_id(build_id)


def test_sandbox_config_defaults_follow_the_issue() -> None:
    """Defaults: 8G memory, 4 CPUs, 1200 s timeout, warning at 900 s, userns isolation."""
    config = _config()
    assert config.memory_limit == 8 << 30
    assert config.cpus == 4.0
    assert (config.timeout_seconds, config.warning_seconds) == (1200.0, 900.0)
    assert config.isolation == "userns"
    assert config.uid_base == 2147352576
    assert config.cpu_quota_percent == 400


def test_sandbox_config_machine_name_is_prefixed_build_id() -> None:
    """Machine names are the prefix and the build id, so each build's is unique."""
    assert _config().machine_name("b-1") == "isorunner-b-1"
    with pytest.raises(ValueError, match="build id"):
        _config().machine_name("../x")


@pytest.mark.parametrize(
    "overrides",
    [
        {"memory_limit": 1024},
        {"cpus": 0},
        {"pids_limit": 1},
        {"warning_seconds": 2000.0},
        {"warning_seconds": 0.0},
        {"uid_base": 12345},
        {"uid_base": 0},
        {"isolation": "none"},
        {"machine_prefix": "Bad-Prefix"},
        {"base_dir": Path("relative")},
        {"max_line_bytes": 10},
    ],
)
def test_sandbox_config_rejects_invalid_values(overrides: dict[str, object]) -> None:
    """Out-of-range settings fail at construction, not in the middle of a build."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        _config(**overrides)


def test_sandbox_config_is_frozen() -> None:
    """A SandboxConfig cannot be changed after it is built."""
    config = _config()
    with pytest.raises(AttributeError):
        config.cpus = 2  # type: ignore[misc]
