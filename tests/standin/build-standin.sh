#!/usr/bin/env bash
# Build isorunner's test stand-in once per machine (contract: tests/standin/CONTRACT.md):
#   <dir>/base/              Debian 13 (trixie) + archiso's tools + the stand-in mkarchiso,
#                            adopted by scripts/setup-sandbox.sh --from-rootfs
#   <dir>/packages/          tiny packages built with makepkg (setuid, file capability,
#                            system user, install scriptlets) that fill the base's mirror
#   <dir>/profiles/minimal/  a tiny archiso profile that builds with them
#   <dir>/stamp              hash of every input; when it matches, nothing is done
# <dir> is $ISORUNNER_STANDIN_DIR or /var/cache/isorunner-test/standin. The debootstrap
# result is cached apart (<dir>/debootstrap/), keyed by suite, mirror and package list,
# so editing the stand-in's scripts does not download Debian again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${here}/../.." && pwd)"
dir="${ISORUNNER_STANDIN_DIR:-/var/cache/isorunner-test/standin}"

readonly SUITE=trixie
readonly MIRROR=http://deb.debian.org/debian
readonly DEB_PACKAGES=(pacman-package-manager arch-install-scripts xorriso squashfs-tools erofs-utils
    mtools dosfstools libarchive-tools zstd uidmap busybox-static)
readonly BUILD_USER=isorunner-build
readonly UID_BASE=2147352576

say() {
    printf 'build-standin: %s\n' "$*"
}

die() {
    printf 'build-standin: error: %s\n' "$*" >&2
    exit 1
}

# Hash of every input: the files under tests/standin and scripts/setup-sandbox.sh
# (names, modes and contents, symlink targets included), plus the debootstrap key.
inputs_hash() {
    (
        cd "${repo_root}"
        printf '%s\n' "${SUITE} ${MIRROR} ${DEB_PACKAGES[*]} ${UID_BASE}"
        find tests/standin scripts/setup-sandbox.sh \( -name __pycache__ -o -name '*.md' \) -prune -o \
            \( -type f -o -type l \) -printf '%p %m %l\n' | LC_ALL=C sort
        find tests/standin scripts/setup-sandbox.sh \( -name __pycache__ -o -name '*.md' \) -prune -o -type f -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

# debootstrap into <dir>/debootstrap/rootfs unless a rootfs for the same key exists.
debootstrap_rootfs() {
    "${repo_root}/tests/debootstrap-cache.sh" "${dir}/debootstrap" "${SUITE}" "${MIRROR}" \
        "${DEB_PACKAGES[@]}" || die "could not make the Debian root (above)"
}

# makepkg refuses root: build as a dedicated unprivileged system user.
ensure_build_user() {
    id "${BUILD_USER}" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "${BUILD_USER}"
}

build_packages() {
    local rootfs="$1" out="$2" work="${dir}/build/makepkg" pkg
    command -v makepkg >/dev/null || die "makepkg is missing (Debian: makepkg; scripts/install installs it)"
    ensure_build_user
    rm -rf -- "${work}" "${out}"
    mkdir -p -- "${work}" "${out}"
    cp -r -- "${here}/packages/." "${work}/"
    cp -- "${rootfs}/usr/bin/busybox" "${work}/isorunner-base/busybox"
    cat >"${work}/makepkg.conf" <<CONF
source /etc/makepkg.conf
PKGEXT='.pkg.tar.zst'
OPTIONS=(!strip !debug !docs emptydirs !zipman !purge)
PKGDEST='${out}'
CONF
    chown -R "${BUILD_USER}:" "${work}" "${out}"
    for pkg in "${work}"/*/; do
        (
            cd "${pkg}"
            setpriv --reuid="${BUILD_USER}" --regid="${BUILD_USER}" --init-groups \
                env HOME="${work}" TMPDIR="${work}" SOURCE_DATE_EPOCH=1700000000 \
                makepkg --config "${work}/makepkg.conf" --force --nodeps --noconfirm \
                >"${pkg%/}.log" 2>&1
        ) || die "makepkg failed for $(basename -- "${pkg}"); see ${pkg%/}.log"
    done
    chown -R root:root "${out}"
}

main() {
    local start hash
    start="${SECONDS}"
    hash="$(inputs_hash)"
    if [[ -f "${dir}/stamp" && "$(<"${dir}/stamp")" == "${hash}" && -d "${dir}/base" &&
        -d "${dir}/profiles/minimal" ]]; then
        say "up to date at ${dir} (stamp ${hash:0:12})"
        return 0
    fi
    ((EUID == 0)) || die "must run as root (debootstrap, chown to the sandbox UID range)"
    mkdir -p -- "${dir}"
    rm -f -- "${dir}/stamp"

    debootstrap_rootfs

    local rootfs="${dir}/build/rootfs"
    rm -rf -- "${dir}/build"
    mkdir -p -- "${dir}/build"
    cp -a -- "${dir}/debootstrap/rootfs" "${rootfs}"
    install -m 0755 -- "${here}/mkarchiso" "${rootfs}/usr/local/bin/mkarchiso"

    build_packages "${rootfs}" "${dir}/packages"

    rm -rf -- "${dir}/base.next" "${dir}/base.next.new"
    "${repo_root}/scripts/setup-sandbox.sh" --from-rootfs "${rootfs}" --repo-from "${dir}/packages" \
        --base "${dir}/base.next" --uid-base "${UID_BASE}" >"${dir}/build/setup-sandbox.log" ||
        die "setup-sandbox.sh failed; see ${dir}/build/setup-sandbox.log"
    if [[ -e "${dir}/base" ]]; then
        mv -T -- "${dir}/base" "${dir}/base.old"
    fi
    mv -T -- "${dir}/base.next" "${dir}/base"
    rm -rf -- "${dir}/base.old" "${rootfs}"

    rm -rf -- "${dir}/profiles/minimal"
    mkdir -p -- "${dir}/profiles"
    cp -a -- "${here}/profiles/minimal" "${dir}/profiles/minimal"

    printf '%s\n' "${hash}" >"${dir}/stamp"
    say "built ${dir} in $((SECONDS - start)) s: base/, packages/ ($(find "${dir}/packages" -name '*.pkg.tar.zst' | wc -l) packages), profiles/minimal/"
}

main "$@"
