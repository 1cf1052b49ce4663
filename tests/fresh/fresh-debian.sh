#!/usr/bin/env bash
# The fresh-machine check, run by .ci/run as root: do `scripts/install` and the tests
# work on a Debian 12 machine that has only what a minimal install has?
#
#   1. `debootstrap --variant=minbase bookworm` once, cached in <dir>/debootstrap and
#      keyed by suite and mirror (tests/debootstrap-cache.sh, as the stand-in's base);
#   2. per run, in <dir>/runs/<id>/ (removed afterwards): an overlay over that root, so
#      nothing of one run reaches the next; the committed HEAD of this checkout
#      (`git archive`: an untracked or uncommitted file cannot hide a gap); apt sources
#      naming the host's Debian mirror, Debian suites only (a third-party repository on
#      the host must not hide a missing package); the host's own certificate
#      authorities and TLS variables (how this host reaches PyPI);
#   3. `systemd-nspawn --register=no --keep-unit` (CI has no systemd as PID 1), sharing
#      the host's network to reach that mirror and PyPI, runs tests/fresh/inside.sh:
#      scripts/install, the stand-in's build, the quick tests, every listed program on
#      PATH, and the first run of scripts/run.
# Kept between runs in <dir>/cache: downloaded .deb files and the pip/uv download caches
# (every package is still installed afresh), and the stand-in's Debian root is bound
# read-only from the host's stand-in cache when it has one, to save the download.
# <dir> is $ISORUNNER_FRESH_DIR or /var/cache/isorunner-test/fresh. $ISORUNNER_FRESH_REV
# checks another commit than HEAD (`ISORUNNER_FRESH_REV=$(git stash create)` checks the
# staged work before it is committed). ISORUNNER_FRESH_INTEGRATION=1 also runs the
# integration tests in there (nested nspawn): not part of CI yet, see inside.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${here}/../.." && pwd)"
dir="${ISORUNNER_FRESH_DIR:-/var/cache/isorunner-test/fresh}"
standin_dir="${ISORUNNER_STANDIN_DIR:-/var/cache/isorunner-test/standin}"
rev="${ISORUNNER_FRESH_REV:-HEAD}"

readonly SUITE=bookworm
readonly DEFAULT_MIRROR=http://deb.debian.org/debian
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() {
    printf 'fresh-debian: %s\n' "$*"
}

die() {
    printf 'fresh-debian: error: %s\n' "$*" >&2
    exit 1
}

# "URI suite component" lines of the host's Debian 12 sources (apt's own view of them).
# The $(…) are apt's format fields, not shell.
# shellcheck disable=SC2016
host_debian_sources() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
        2>/dev/null | awk -v s="${SUITE}" '$2 == s || $2 == s "-updates" || $2 == s "-security"' |
        LC_ALL=C sort -u
}

# The host's mirror for the suite itself (debootstrap's source), else Debian's default.
host_mirror() {
    local uri
    uri="$(host_debian_sources | awk -v s="${SUITE}" '$2 == s {print $1; exit}')"
    printf '%s\n' "${uri:-${DEFAULT_MIRROR}}"
}

write_sources() {
    local root="$1" mirror="$2" lines=() line uri suite component
    mapfile -t lines < <(host_debian_sources)
    if ((${#lines[@]} == 0)); then
        lines=("${mirror} ${SUITE} main" "${mirror} ${SUITE}-updates main")
    fi
    : >"${root}/etc/apt/sources.list"
    for line in "${lines[@]}"; do
        read -r uri suite component <<<"${line}"
        printf 'deb [signed-by=%s] %s %s %s\n' "${KEYRING}" "${uri%/}" "${suite}" "${component}" \
            >>"${root}/etc/apt/sources.list"
    done
    # The host's proxy, if it has one, is how this machine reaches the mirror.
    apt-config dump 'Acquire' 2>/dev/null | grep -i '::proxy' >"${root}/etc/apt/apt.conf.d/90host-proxy" || true
}

# The host's own certificate authorities (a TLS-inspecting egress, say) and the variables
# that point TLS clients at the system bundle: how this machine reaches PyPI. They take
# effect when scripts/install installs ca-certificates, as on the host.
host_trust() {
    local root="$1" name
    if [[ -d /usr/local/share/ca-certificates ]]; then
        mkdir -p -- "${root}/usr/local/share/ca-certificates"
        cp -a -- /usr/local/share/ca-certificates/. "${root}/usr/local/share/ca-certificates/"
    fi
    for name in SSL_CERT_FILE SSL_CERT_DIR PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE \
        http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        if [[ -n "${!name:-}" ]]; then
            printf -- '--setenv=%s=%s\n' "${name}" "${!name}"
        fi
    done
}

cleanup() {
    local run="$1"
    if mountpoint -q -- "${run}/root"; then
        umount -- "${run}/root" || umount --lazy -- "${run}/root"
    fi
    rm -rf --one-file-system -- "${run}"
}

main() {
    ((EUID == 0)) || die "must run as root (debootstrap, overlay mount, systemd-nspawn)"
    local start="${SECONDS}" mirror run
    mirror="$(host_mirror)"
    "${repo_root}/tests/debootstrap-cache.sh" "${dir}/debootstrap" "${SUITE}" "${mirror}" ||
        die "could not make the Debian ${SUITE} root (above)"

    mkdir -p -- "${dir}/runs" "${dir}/cache/apt-archives" "${dir}/cache/root-cache"
    run="$(mktemp -d -- "${dir}/runs/XXXXXX")"
    # shellcheck disable=SC2064 # the run directory is fixed now
    trap "cleanup '${run}'" EXIT
    mkdir -- "${run}/upper" "${run}/work" "${run}/root" "${run}/src" "${run}/tmp" "${run}/var-tmp"
    chmod 1777 -- "${run}/tmp" "${run}/var-tmp"
    mkdir -p -- "${run}/standin/debootstrap"
    mount -t overlay overlay \
        -o "lowerdir=${dir}/debootstrap/rootfs,upperdir=${run}/upper,workdir=${run}/work" "${run}/root"
    write_sources "${run}/root" "${mirror}"
    # What Debian's installer writes and debootstrap does not: localhost resolves.
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"${run}/root/etc/hosts"
    git -C "${repo_root}" archive --format=tar "${rev}" | tar -x -C "${run}/src"
    say "${rev} ($(git -C "${repo_root}" rev-parse --short "${rev}")) in a fresh Debian ${SUITE} (mirror ${mirror})"

    local trust_env=()
    mapfile -t trust_env < <(host_trust "${run}/root")
    # /tmp, /var/tmp and the stand-in live on the host's file system, as on a machine:
    # an overlay's upper directory and an idmapped bind cannot sit on the container's
    # own overlay root.
    local binds=(
        "--bind=${run}/src:/src"
        "--bind=${run}/tmp:/tmp"
        "--bind=${run}/var-tmp:/var/tmp"
        "--bind=${run}/standin:/var/cache/isorunner-test/standin"
        "--bind=${dir}/cache/apt-archives:/var/cache/apt/archives"
        "--bind=${dir}/cache/root-cache:/root/.cache"
    )
    local standin_cache=/var/cache/isorunner-test/standin/debootstrap
    if [[ -d "${standin_dir}/debootstrap/rootfs" ]]; then
        binds+=("--bind-ro=${standin_dir}/debootstrap:${standin_cache}")
    fi
    local status=0
    systemd-nspawn --quiet --register=no --keep-unit --console=pipe -D "${run}/root" \
        "${binds[@]}" "${trust_env[@]}" --setenv=CI=true \
        --setenv=ISORUNNER_FRESH_INTEGRATION="${ISORUNNER_FRESH_INTEGRATION:-0}" --setenv=UV_LINK_MODE=copy --chdir=/src \
        -- /src/tests/fresh/inside.sh || status=$?
    ((status == 0)) || die "the fresh Debian ${SUITE} machine failed (exit ${status}); output above"
    say "passed in $((SECONDS - start)) s"
}

main "$@"
