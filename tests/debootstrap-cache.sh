#!/usr/bin/env bash
# usage: tests/debootstrap-cache.sh DIR SUITE MIRROR [PACKAGE...]
#
# A Debian root file system made by `debootstrap --variant=minbase`, kept in DIR/rootfs
# and reused while DIR/key (suite, mirror and extra packages) is unchanged; otherwise
# made anew. Used by the stand-in base (tests/standin/build-standin.sh) and the
# fresh-machine check (tests/fresh/fresh-debian.sh). Callers copy or overlay the rootfs;
# they never change it. A lock (DIR.lock) keeps two runs from making it at once.
# Prints one line when it runs debootstrap, nothing when the cache is fresh.
set -euo pipefail

die() {
    printf 'debootstrap-cache: error: %s\n' "$*" >&2
    exit 1
}

(($# >= 3)) || die "usage: $0 DIR SUITE MIRROR [PACKAGE...]"
cache="$1" suite="$2" mirror="$3"
shift 3
packages=("$@")
key="${suite} ${mirror} ${packages[*]}"

# Unmount whatever is mounted under $1 (debootstrap mounts /proc and /sys in its target
# and leaves them when it is killed): a copy of the rootfs would otherwise copy the
# host's /proc, and rm would stop at the mount.
unmount_under() {
    local target
    findmnt -rn -o TARGET | awk -v top="$1/" 'index($0, top) == 1' | sort -r |
        while read -r target; do
            umount -l -- "${target}"
        done
}

fresh() {
    [[ -f "${cache}/key" && "$(<"${cache}/key")" == "${key}" && -d "${cache}/rootfs/usr" ]]
}

fresh && exit 0
((EUID == 0)) || die "must run as root to debootstrap ${suite}"
command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install installs it)"
mkdir -p -- "$(dirname -- "${cache}")"
exec 9>"${cache}.lock"
flock 9
fresh && exit 0

script=()
# Debian 12's debootstrap knows trixie; older ones may not: use the sid script then.
[[ -e "/usr/share/debootstrap/scripts/${suite}" ]] || script=(/usr/share/debootstrap/scripts/sid)
include=()
if ((${#packages[@]})); then
    include=("--include=$(
        IFS=,
        printf '%s' "${packages[*]}"
    )")
fi
printf 'debootstrap-cache: debootstrap %s (minbase + %d packages) into %s\n' \
    "${suite}" "${#packages[@]}" "${cache}"
unmount_under "${cache}"
rm -rf --one-file-system -- "${cache}"
mkdir -p -- "${cache}"
if ! debootstrap --variant=minbase "${include[@]}" "${suite}" "${cache}/rootfs.tmp" "${mirror}" \
    "${script[@]}" >"${cache}/debootstrap.log" 2>&1; then
    unmount_under "${cache}"
    die "debootstrap failed; see ${cache}/debootstrap.log"
fi
unmount_under "${cache}"
mv -- "${cache}/rootfs.tmp" "${cache}/rootfs"
printf '%s\n' "${key}" >"${cache}/key"
