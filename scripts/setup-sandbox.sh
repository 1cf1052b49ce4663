#!/usr/bin/env bash
# Prepare isorunner's sandbox base: a read-only root file system that every build's
# overlay container starts from (contract: tests/standin/CONTRACT.md).
#
#   1. root file system: `pacstrap` on an Arch host; elsewhere the signed
#      archlinux-bootstrap tarball (gpg-verified) with archiso installed into it; or an
#      existing tree adopted with --from-rootfs (the test stand-in does this). The base
#      holds the build tools only: each build's packages are synced on the host
#      (runner/packages) and bound read-only at /srv/isorunner/repo for that build;
#   2. wrappers in /usr/local/sbin (first on the container's PATH): mount/umount let
#      real pacstrap run in a user namespace; pacman, mkfs.fat and xorriso remove the
#      three ways the build time leaks into an ISO under SOURCE_DATE_EPOCH (one wrapper
#      a leak, see write_pacman_wrapper and below; the pacman wrapper applies to every
#      install in the container, so to the packages pacstrap takes from the build's
#      repository); the bind-mount targets /build/{profile,work,output} and
#      /srv/isorunner/repo, the offline /etc/isorunner/pacman.conf and
#      /etc/isorunner/manifest.json;
#   3. the host-side pacman keyring isorunner checks package signatures against
#      (--keyring-dir): archlinux-keyring installed on the host, `pacman-key --init`,
#      `--populate archlinux`, and the newer keys of the base's own keyring;
#   4. ownership of the whole tree shifted once to the range uid_base..uid_base+65535,
#      keeping setuid/setgid bits and file capabilities (chown clears both);
#   5. optionally (--packages FILE), a pre-warm of the host's package cache: `pacman -Sw`
#      of the list into <cache-dir>/incoming/, which builds take from instead of
#      downloading.
#
# Everything is assembled in <base>.new and renamed to <base> at the end, so a base is
# either complete or absent. A second run finds the manifest and changes nothing (but
# sets up a missing keyring and pre-warms the cache when asked).
# --dry-run prints the plan and changes nothing.
set -euo pipefail

readonly PROG=setup-sandbox.sh
readonly DEFAULT_BASE=/var/lib/isorunner/sandbox/base
readonly DEFAULT_UID_BASE=2147352576
readonly UID_COUNT=65536
readonly DEFAULT_CACHE_DIR=/var/lib/isorunner/packages
readonly DEFAULT_KEYRING_DIR=/var/lib/isorunner/keyring
readonly REPO_NAME=isorunner
readonly REPO_DIR=/srv/isorunner/repo
readonly CONF_DIR=/etc/isorunner
# /srv/isorunner/repo is where the sandbox binds each build's own repository.
readonly MOUNT_POINTS=(/build/profile /build/work /build/output "${REPO_DIR}")
# The repositories a --packages pre-warm downloads from.
readonly PREWARM_REPOS=(core extra)
# What the base needs to run mkarchiso (archiso pulls arch-install-scripts, squashfs-tools,
# libisoburn, dosfstools, mtools); grub provides grub-mkstandalone for uefi.grub profiles;
# qemu-system-x86 (with SeaBIOS) and edk2-ovmf run the boot test's guests.
readonly BASE_PACKAGES=(base archiso grub qemu-system-x86 edk2-ovmf)
# ISORUNNER_ARCH_MIRROR, ISORUNNER_RELEASE_KEY_FILE and ISORUNNER_RELEASE_KEY_FPR stand in
# for Arch's mirror and release key in tests (tests/sandbox/test_setup_bootstrap.py serves
# a signed fake mirror on 127.0.0.1); nothing else sets them.
readonly ARCH_MIRROR="${ISORUNNER_ARCH_MIRROR:-https://geo.mirror.pkgbuild.com}"
readonly ARCHIVE_MIRROR=https://archive.archlinux.org
# Arch Linux release signing key (Pierre Schmitz), as published on archlinux.org/download.
readonly RELEASE_KEY_FPR="${ISORUNNER_RELEASE_KEY_FPR:-3E80CA1A8B89F69CBA57D98A76A5EF9054449A5C}"
readonly RELEASE_KEY_UID=pierre@archlinux.org
readonly RELEASE_KEY_FILE="${ISORUNNER_RELEASE_KEY_FILE:-}"
# pacman expands $repo and $arch in Server lines itself.
# shellcheck disable=SC2016
readonly SERVER_PATH='$repo/os/$arch'

usage() {
    cat <<EOF
usage: ${PROG} [options]

Prepare the read-only base of isorunner's build sandbox.

  --base DIR              where the base lives (default: ${DEFAULT_BASE})
  --archive-date Y/M/D    bootstrap (and pre-warm) from the Arch Linux Archive of that day
  --uid-base N            first host UID of the container's range (default: ${DEFAULT_UID_BASE};
                          a multiple of 65536)
  --from-rootfs DIR       adopt a copy of an existing root file system instead of bootstrapping
  --keyring-dir DIR       the host-side pacman keyring builds' packages are checked against
                          (default: ${DEFAULT_KEYRING_DIR}; isorunner's packages.keyring)
  --no-keyring            do not set up that keyring (you manage it, or tests)
  --packages FILE         optional: pre-warm the package cache with this list (one name a
                          line, '#' comments; e.g. a profile's packages.x86_64); builds
                          download what they need anyway
  --cache-dir DIR         the package cache to pre-warm (default: ${DEFAULT_CACHE_DIR};
                          isorunner's packages.cache_dir)
  --mirror URL            the Arch mirror packages come from, without /\$repo/os/\$arch
                          (default: ${ARCH_MIRROR})
  --wrappers-only DIR     write only the wrappers (mount, umount, pacman, mkfs.fat, xorriso)
                          under DIR/usr/local/sbin
  --dry-run               print the plan and change nothing
  -h, --help              this text
EOF
}

die() {
    printf '%s: error: %s\n' "${PROG}" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: error: %s\n' "${PROG}" "$*" >&2
    printf "Try '%s --help'.\n" "${PROG}" >&2
    exit 2
}

log() {
    printf '%s: %s\n' "${PROG}" "$*"
}

# ---------------------------------------------------------------------------------------
# Arguments

base="${DEFAULT_BASE}"
packages_file=""
archive_date=""
uid_base="${DEFAULT_UID_BASE}"
from_rootfs=""
keyring_dir="${DEFAULT_KEYRING_DIR}"
keyring=1
cache_dir="${DEFAULT_CACHE_DIR}"
mirror="${ARCH_MIRROR}"
wrappers_only=""
dry_run=0

parse_args() {
    while (($#)); do
        case "$1" in
            --base | --packages | --archive-date | --uid-base | --from-rootfs | --keyring-dir | \
                --cache-dir | --mirror | --wrappers-only)
                if (($# < 2)) || [[ -z "$2" ]]; then
                    usage_error "$1 needs a value"
                fi
                case "$1" in
                    --base) base="$2" ;;
                    --packages) packages_file="$2" ;;
                    --archive-date) archive_date="$2" ;;
                    --uid-base) uid_base="$2" ;;
                    --from-rootfs) from_rootfs="$2" ;;
                    --keyring-dir) keyring_dir="$2" ;;
                    --cache-dir) cache_dir="$2" ;;
                    --mirror) mirror="${2%/}" ;;
                    --wrappers-only) wrappers_only="$2" ;;
                esac
                shift 2
                ;;
            --no-keyring) keyring=0 && shift ;;
            --dry-run) dry_run=1 && shift ;;
            -h | --help) usage && exit 0 ;;
            *) usage_error "unknown argument '$1'" ;;
        esac
    done
}

validate_args() {
    [[ "${uid_base}" =~ ^[0-9]+$ ]] || usage_error "--uid-base must be a number, not '${uid_base}'"
    ((uid_base >= UID_COUNT && uid_base % UID_COUNT == 0)) ||
        usage_error "--uid-base must be a non-zero multiple of ${UID_COUNT}, not ${uid_base}"
    ((uid_base + UID_COUNT - 1 < 4294967295)) ||
        usage_error "--uid-base ${uid_base} leaves no room for ${UID_COUNT} UIDs below 2^32-1"
    if [[ -n "${archive_date}" ]]; then
        if [[ ! "${archive_date}" =~ ^[0-9]{4}/[0-9]{2}/[0-9]{2}$ ]] ||
            [[ "$(date -d "${archive_date//\//-}" +%Y/%m/%d 2>/dev/null)" != "${archive_date}" ]]; then
            usage_error "--archive-date must be a real date written YYYY/MM/DD, not '${archive_date}'"
        fi
    fi
    if [[ -n "${packages_file}" ]]; then
        [[ -f "${packages_file}" ]] || usage_error "--packages: '${packages_file}' is not a file"
        ((keyring)) || [[ -f "${keyring_dir}/pubring.gpg" ]] ||
            usage_error "--packages checks signatures against ${keyring_dir}: drop --no-keyring or set the keyring up first"
    fi
    [[ "${mirror}" =~ ^https?://[^[:space:]]+$ ]] || usage_error "--mirror must be an http(s):// URL, not '${mirror}'"
    keyring_dir="$(realpath -m -- "${keyring_dir}")"
    cache_dir="$(realpath -m -- "${cache_dir}")"
    if [[ -n "${from_rootfs}" ]]; then
        [[ -d "${from_rootfs}/usr" ]] ||
            usage_error "--from-rootfs: '${from_rootfs}' does not look like a root file system (no usr/)"
    fi
    base="$(realpath -m -- "${base}")"
    [[ "${base}" != "/" ]] || usage_error "--base must not be /"
    if [[ -n "${from_rootfs}" ]]; then
        from_rootfs="$(realpath -- "${from_rootfs}")"
        [[ "${from_rootfs}" != "${base}" ]] || usage_error "--from-rootfs and --base are the same directory"
    fi
}

# ---------------------------------------------------------------------------------------
# Plan: which steps run is decided here, from the arguments and the state of the disk.

host_kind() {
    # ISORUNNER_SETUP_HOST=arch|other overrides the detection (tests of the plan).
    if [[ -n "${ISORUNNER_SETUP_HOST:-}" ]]; then
        printf '%s\n' "${ISORUNNER_SETUP_HOST}"
    elif [[ -e /etc/arch-release ]] && command -v pacstrap >/dev/null; then
        printf 'arch\n'
    else
        printf 'other\n'
    fi
}

# Prints the steps, one a line: `<function> <argument description>`.
make_plan() {
    local manifest="${base}${CONF_DIR}/manifest.json"
    if [[ -f "${manifest}" ]]; then
        check_manifest_uid_base "${manifest}"
        echo "step_nothing ${base}"
        if ((keyring)) && [[ ! -f "${keyring_dir}/pubring.gpg" ]]; then
            echo "step_keyring ${base}"
        fi
        [[ -z "${packages_file}" ]] || echo "step_prewarm ${cache_dir}"
        return
    fi
    [[ ! -e "${base}" ]] ||
        die "${base} exists but has no ${CONF_DIR}/manifest.json (not a finished base); remove it or choose another --base"
    local staging="${base}.new"
    [[ ! -e "${staging}" ]] || echo "step_remove_stale ${staging}"
    if [[ -n "${from_rootfs}" ]]; then
        echo "step_copy_rootfs ${staging}"
    elif [[ "$(host_kind)" == arch ]]; then
        echo "step_pacstrap ${staging}"
    else
        echo "step_bootstrap ${staging}"
    fi
    echo "step_wrappers ${staging}"
    echo "step_mount_points ${staging}"
    echo "step_pacman_conf ${staging}"
    echo "step_manifest ${staging}"
    # Before the shift: it may import the base's keyring, which pacman-key reads as root.
    ((!keyring)) || echo "step_keyring ${staging}"
    echo "step_shift ${staging}"
    echo "step_publish ${staging}"
    [[ -z "${packages_file}" ]] || echo "step_prewarm ${cache_dir}"
}

check_manifest_uid_base() {
    local recorded
    recorded="$(sed -n 's/.*"uid_base": *\([0-9]*\).*/\1/p' "$1")"
    [[ -n "${recorded}" ]] || die "$1 has no uid_base; the base is damaged: remove ${base} and run again"
    [[ "${recorded}" == "${uid_base}" ]] ||
        die "${base} is shifted to uid_base ${recorded}, not ${uid_base}; pass --uid-base ${recorded} or remove the base"
}

# ---------------------------------------------------------------------------------------
# Steps

step_nothing() {
    log "base $1 is already set up (manifest present); nothing to do"
}

step_remove_stale() {
    log "removing the unfinished staging directory $1"
    rm -rf --one-file-system -- "$1"
}

step_copy_rootfs() {
    log "copying ${from_rootfs} to $1"
    mkdir -p -- "$1"
    # -a keeps owners, modes, links and xattrs (file capabilities).
    cp -a --reflink=auto -- "${from_rootfs}/." "$1/"
}

step_pacstrap() {
    log "pacstrap ${BASE_PACKAGES[*]} into $1"
    mkdir -p -- "$1"
    local conf=/etc/pacman.conf
    if [[ -n "${archive_date}" ]]; then
        conf="$(archive_pacman_conf)"
    fi
    pacstrap -C "${conf}" -c "$1" "${BASE_PACKAGES[@]}"
}

# A copy of the host's pacman.conf whose repositories all point at the archive date.
archive_pacman_conf() {
    local conf
    conf="$(mktemp --tmpdir isorunner-pacman.XXXXXX.conf)"
    sed -e '/^[[:space:]]*\(Include\|Server\)[[:space:]]*=/d' \
        -e "/^\[\(core\|extra\|multilib\)\]/a Server = ${ARCHIVE_MIRROR}/repos/${archive_date}/${SERVER_PATH}" \
        /etc/pacman.conf >"${conf}"
    printf '%s\n' "${conf}"
}

bootstrap_url() {
    if [[ -n "${archive_date}" ]]; then
        # The archive keeps monthly ISO releases, dated on the 1st.
        local month="${archive_date%/*}"
        local release="${month//\//.}.01"
        printf '%s/iso/%s/archlinux-bootstrap-%s-x86_64.tar.zst\n' "${ARCHIVE_MIRROR}" "${release}" "${release}"
    else
        printf '%s/iso/latest/archlinux-bootstrap-x86_64.tar.zst\n' "${ARCH_MIRROR}"
    fi
}

step_bootstrap() {
    local url tmp
    url="$(bootstrap_url)"
    tmp="$(mktemp -d --tmpdir isorunner-bootstrap.XXXXXX)"
    log "downloading ${url} and its signature"
    curl -fsSL --retry 3 -o "${tmp}/bootstrap.tar.zst" "${url}"
    curl -fsSL --retry 3 -o "${tmp}/bootstrap.tar.zst.sig" "${url}.sig"
    verify_release_signature "${tmp}/bootstrap.tar.zst" "${tmp}"
    mkdir -p -- "$1"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "${tmp}/bootstrap.tar.zst" \
        -C "$1" --strip-components=1
    rm -rf -- "${tmp}"
    if [[ -n "${archive_date}" ]]; then
        printf 'Server = %s/repos/%s/%s\n' "${ARCHIVE_MIRROR}" "${archive_date}" "${SERVER_PATH}" \
            >"$1/etc/pacman.d/mirrorlist"
    else
        printf 'Server = %s/%s\n' "${mirror}" "${SERVER_PATH}" >"$1/etc/pacman.d/mirrorlist"
    fi
    log "installing ${BASE_PACKAGES[*]} in the bootstrap root"
    in_root "$1" pacman-key --init
    in_root "$1" pacman-key --populate archlinux
    in_root "$1" pacman -Syu --noconfirm --needed "${BASE_PACKAGES[@]}"
}

# The signature must be a good one by the pinned release key, not merely by some key.
verify_release_signature() {
    local file="$1" tmp="$2" status
    local -x GNUPGHOME="${tmp}/gnupg"
    install -d -m 0700 -- "${GNUPGHOME}"
    if [[ -n "${RELEASE_KEY_FILE}" ]]; then
        gpg --batch --quiet --import "${RELEASE_KEY_FILE}"
    else
        gpg --batch --quiet --auto-key-locate clear,wkd --locate-external-keys "${RELEASE_KEY_UID}" >/dev/null
    fi
    status="$(gpg --batch --status-fd 1 --verify "${file}.sig" "${file}" 2>/dev/null)" ||
        die "the signature of $(basename -- "${file}") does not verify; refusing to use it"
    grep -q "^\[GNUPG:\] VALIDSIG ${RELEASE_KEY_FPR} " <<<"${status}" ||
        grep -q "^\[GNUPG:\] VALIDSIG .* ${RELEASE_KEY_FPR}\$" <<<"${status}" ||
        die "$(basename -- "${file}") is not signed by the Arch Linux release key ${RELEASE_KEY_FPR}"
}

# Run a command inside a root tree (setup time only: network allowed, real root).
in_root() {
    local root="$1"
    shift
    systemd-nspawn --quiet --register=no --keep-unit --pipe -D "${root}" -- "$@"
}

readonly WRAPPERS=(mount umount pacman mkfs.fat xorriso)

step_wrappers() {
    local dir="$1/usr/local/sbin" name
    log "writing the ${WRAPPERS[*]} wrappers in ${dir}"
    install -d -m 0755 -- "${dir}"
    write_mount_wrapper >"${dir}/mount"
    write_umount_wrapper >"${dir}/umount"
    write_pacman_wrapper >"${dir}/pacman"
    write_mkfs_fat_wrapper >"${dir}/mkfs.fat"
    write_xorriso_wrapper >"${dir}/xorriso"
    for name in "${WRAPPERS[@]}"; do
        chmod 0755 -- "${dir}/${name}"
    done
}

# pacstrap mounts devtmpfs on <target>/dev, which a user namespace refuses. The wrapper
# turns exactly that call into a recursive bind of the container's /dev (a plain --bind
# is refused there too) and passes every other call to the real mount unchanged.
write_mount_wrapper() {
    cat <<'EOF'
#!/bin/sh
# isorunner: let pacstrap's devtmpfs mount work in a user namespace (setup-sandbox.sh).
real="${ISORUNNER_REAL_MOUNT:-/usr/bin/mount}"
type="" target="" count=0 prev=""
for arg in "$@"; do
    case "$prev" in
        -t | --types) type="$arg" prev="" && continue ;;
        -o | --options) prev="" && continue ;;
    esac
    case "$arg" in
        -t | --types | -o | --options) prev="$arg" ;;
        --types=*) type="${arg#--types=}" ;;
        -t?*) type="${arg#-t}" ;;
        -*) ;;
        *) count=$((count + 1)) && target="$arg" ;;
    esac
done
if [ "$type" = devtmpfs ] && [ "$count" -eq 2 ]; then
    "$real" --rbind /dev "$target" || exit
    exec "$real" --make-rslave "$target"
fi
exec "$real" "$@"
EOF
}

# pacstrap unmounts <target>/dev after its own sub-mounts, but the recursive bind also
# copied the container's /dev sub-mounts, and in a user namespace those are locked to
# their parent: `umount -R` fails on them ("not mounted"). A lazy unmount of <target>/dev
# detaches the whole copied tree at once, which the kernel allows.
write_umount_wrapper() {
    cat <<'EOF'
#!/bin/sh
# isorunner: detach the recursive /dev bind made by the mount wrapper (setup-sandbox.sh).
real="${ISORUNNER_REAL_UMOUNT:-/usr/bin/umount}"
for arg in "$@"; do
    case "$arg" in -*) exec "$real" "$@" ;; esac
done
status=0
for target in "$@"; do
    case "$target" in
        /dev | /dev/) "$real" "$target" || status=$? ;;
        */dev | */dev/) "$real" --lazy "$target" || status=$? ;;
        *) "$real" "$target" || status=$? ;;
    esac
done
exit "$status"
EOF
}

# --- Reproducible builds ----------------------------------------------------------------
# Two builds of one commit with the same packages must give byte-identical ISOs. mkarchiso
# exports SOURCE_DATE_EPOCH and mksquashfs clamps file times to it, but three tools still
# write the build's own clock into the image (measured with the real mkarchiso). Each
# wrapper below removes one leak, only when SOURCE_DATE_EPOCH is a number, and otherwise
# runs the real tool unchanged; each takes ISORUNNER_REAL_<TOOL> for the tests.

# Leak 1: pacman writes %INSTALLDATE% (the clock) into every installed package's `desc`
# in the local database, which mkarchiso packs into the airootfs image. After a
# successful -S/-U into a root, every install date later than SOURCE_DATE_EPOCH is set
# to it (the clamp mksquashfs applies to file times). The database is the one pacman
# itself used: -b if given, else what pacman-conf resolves for the same --config, -r
# and --sysroot.
write_pacman_wrapper() {
    cat <<'EOF'
#!/bin/sh
# isorunner: install dates no later than SOURCE_DATE_EPOCH (setup-sandbox.sh, leak 1).
real="${ISORUNNER_REAL_PACMAN:-/usr/bin/pacman}"
epoch="${SOURCE_DATE_EPOCH:-}"
case "$epoch" in '' | *[!0-9]*) exec "$real" "$@" ;; esac
installs=0 conf="" root="" sysroot="" dbpath="" want=""
for arg in "$@"; do
    if [ -n "$want" ]; then
        case "$want" in
            conf) conf="$arg" ;;
            root) root="$arg" ;;
            sysroot) sysroot="$arg" ;;
            dbpath) dbpath="$arg" ;;
        esac
        want="" && continue
    fi
    case "$arg" in
        --) break ;;
        --sync | --upgrade) installs=1 ;;
        --config) want=conf ;;
        --config=*) conf="${arg#--config=}" ;;
        --root) want=root ;;
        --root=*) root="${arg#--root=}" ;;
        --sysroot) want=sysroot ;;
        --sysroot=*) sysroot="${arg#--sysroot=}" ;;
        --dbpath) want=dbpath ;;
        --dbpath=*) dbpath="${arg#--dbpath=}" ;;
        --*) ;;
        -*)
            case "$arg" in *[SU]*) installs=1 ;; esac
            case "$arg" in
                *r) want=root ;;
                *b) want=dbpath ;;
            esac
            ;;
    esac
done
"$real" "$@"
status=$?
[ "$status" -eq 0 ] && [ "$installs" -eq 1 ] || exit "$status"
if [ -z "$dbpath" ]; then
    dbpath="$(pacman-conf ${conf:+"--config=$conf"} ${root:+"--rootdir=$root"} \
        ${sysroot:+"--sysroot=$sysroot"} DBPath)" || dbpath=""
fi
if [ -z "$dbpath" ] || [ ! -d "$dbpath/local" ]; then
    echo "isorunner pacman wrapper: no local database found; install dates left as they are" >&2
    exit "$status"
fi
for desc in "$dbpath"/local/*/desc; do
    [ -f "$desc" ] || continue
    awk -v epoch="$epoch" '
        after && $0 ~ /^[0-9]+$/ && $0 + 0 > epoch + 0 { $0 = epoch; changed = 1 }
        { after = ($0 == "%INSTALLDATE%"); print }
        END { exit !changed }
    ' "$desc" >"$desc.isorunner-tmp" && cat "$desc.isorunner-tmp" >"$desc"
    rm -f "$desc.isorunner-tmp"
done
exit "$status"
EOF
}

# Leak 2: mkfs.fat (dosfstools 4.2, as Arch ships it) takes a random volume serial and
# the current time for the FAT image that mkarchiso makes as the EFI system partition.
# --invariant replaces the time by dosfstools' constant and -i sets the serial from
# SOURCE_DATE_EPOCH (the caller's own -i or --invariant, coming later, still win).
# The mtools that fill the image (mmd, mcopy) honour SOURCE_DATE_EPOCH themselves.
write_mkfs_fat_wrapper() {
    cat <<'EOF'
#!/bin/sh
# isorunner: a FAT image without the clock or a random serial (setup-sandbox.sh, leak 2).
real="${ISORUNNER_REAL_MKFS_FAT:-}"
if [ -z "$real" ]; then
    for dir in /usr/bin /usr/sbin /bin /sbin; do
        [ -x "$dir/mkfs.fat" ] && real="$dir/mkfs.fat" && break
    done
fi
epoch="${SOURCE_DATE_EPOCH:-}"
case "$epoch" in '' | *[!0-9]*) exec "$real" "$@" ;; esac
exec "$real" --invariant -i "$(printf '%08X' "$((epoch % 4294967296))")" "$@"
EOF
}

# Leak 3: xorriso takes the volume dates from SOURCE_DATE_EPOCH but records every file's
# own mtime, and mkarchiso writes the files of the ISO 9660 tree (version, pkglist, the
# airootfs image and its checksum, boot files) during the build. In mkisofs emulation
# --set_all_file_dates sets mtime, atime and ctime of every file to the epoch; it goes
# right after `-as mkisofs`, so an option the caller gives later still wins.
write_xorriso_wrapper() {
    cat <<'EOF'
#!/bin/sh
# isorunner: ISO file dates from SOURCE_DATE_EPOCH (setup-sandbox.sh, leak 3).
real="${ISORUNNER_REAL_XORRISO:-/usr/bin/xorriso}"
epoch="${SOURCE_DATE_EPOCH:-}"
case "$epoch" in '' | *[!0-9]*) exec "$real" "$@" ;; esac
count=$# prev=""
for arg in "$@"; do
    set -- "$@" "$arg"
    if [ "$prev" = -as ]; then
        case "$arg" in
            mkisofs | genisoimage | xorrisofs) set -- "$@" --set_all_file_dates "=$epoch" ;;
        esac
    fi
    prev="$arg"
done
shift "$count"
exec "$real" "$@"
EOF
}

step_mount_points() {
    log "creating the bind-mount targets ${MOUNT_POINTS[*]}"
    local point
    for point in "${MOUNT_POINTS[@]}"; do
        install -d -m 0755 -- "$1${point}"
    done
}

# Package list: names only, comments and blank lines dropped, sorted, unique.
normalised_package_list() {
    sed 's/#.*//;s/[[:space:]]//g;/^$/d' "$1" | LC_ALL=C sort -u
}

# The host-side keyring (runner/packages checks every package against it): the host's
# archlinux-keyring, and the base's own keyring when it has one (newer keys: the base
# was bootstrapped from the signed tarball and updated with pacman).
step_keyring() {
    local root="$1"
    if [[ ! -e /usr/share/keyrings/archlinux.gpg && ! -e /usr/share/pacman/keyrings/archlinux.gpg ]]; then
        log "installing archlinux-keyring on the host"
        if command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq archlinux-keyring >/dev/null
        else
            pacman -S --needed --noconfirm archlinux-keyring >/dev/null
        fi
    fi
    command -v pacman-key >/dev/null || die "pacman-key not found: install pacman (Debian: pacman-package-manager)"
    log "setting up the package keyring ${keyring_dir}"
    install -d -m 0755 -- "${keyring_dir}"
    if [[ ! -f "${keyring_dir}/pubring.gpg" ]]; then
        pacman-key --gpgdir "${keyring_dir}" --init >/dev/null 2>&1 || die "pacman-key --init failed for ${keyring_dir}"
    fi
    pacman-key --gpgdir "${keyring_dir}" --populate archlinux >/dev/null 2>&1 ||
        die "pacman-key --populate archlinux failed for ${keyring_dir}"
    local own="${root}/etc/pacman.d/gnupg"
    if [[ -f "${own}/pubring.gpg" ]]; then
        log "adding the base's newer Arch keys to ${keyring_dir}"
        pacman-key --gpgdir "${keyring_dir}" --import "${own}" >/dev/null 2>&1 || die "importing ${own} failed"
        pacman-key --gpgdir "${keyring_dir}" --import-trustdb "${own}" >/dev/null 2>&1 ||
            die "importing the trust of ${own} failed"
    fi
    gpgconf --homedir "${keyring_dir}" --kill all 2>/dev/null || :
}

# pacman -Sw on the host, private database, the host-side keyring: the files land in
# <cache>/incoming/, where a build that needs one of them takes it (by name and sha256).
step_prewarm() {
    local cache="$1" list=() tmp repo server
    mapfile -t list < <(normalised_package_list "${packages_file}")
    ((${#list[@]})) || die "--packages: ${packages_file} names no package"
    command -v pacman >/dev/null || die "pacman not found: install pacman (Debian: pacman-package-manager)"
    server="${mirror}/${SERVER_PATH}"
    [[ -z "${archive_date}" ]] || server="${ARCHIVE_MIRROR}/repos/${archive_date}/${SERVER_PATH}"
    tmp="$(mktemp -d --tmpdir isorunner-prewarm.XXXXXX)"
    install -d -m 0755 -- "${cache}/incoming"
    {
        printf '[options]\nDBPath = %s/db/\nCacheDir = %s/incoming/\nLogFile = %s/pacman.log\n' \
            "${tmp}" "${cache}" "${tmp}"
        printf 'GPGDir = %s/\nArchitecture = auto\nSigLevel = Required DatabaseOptional\n' "${keyring_dir}"
        printf 'ParallelDownloads = 5\n'
        for repo in "${PREWARM_REPOS[@]}"; do
            printf '\n[%s]\nServer = %s\n' "${repo}" "${server}"
        done
    } >"${tmp}/pacman.conf"
    install -d -- "${tmp}/db"
    log "pre-warming ${cache} with ${#list[@]} packages and their dependencies (pacman -Syw)"
    pacman --config "${tmp}/pacman.conf" -Syw --noconfirm -- "${list[@]}" ||
        die "pacman -Syw failed; see its messages above"
    rm -rf -- "${tmp}"
}

step_pacman_conf() {
    local conf="$1${CONF_DIR}/pacman.conf"
    log "writing ${CONF_DIR}/pacman.conf"
    install -d -m 0755 -- "$1${CONF_DIR}"
    cat >"${conf}" <<EOF
# Written by setup-sandbox.sh. Builds are offline: every package comes from the build's
# own repository, which isorunner bound read-only at ${REPO_DIR}, whatever the
# profile's own pacman.conf says.
[options]
Architecture = auto
# The root is read-only; the work dir is the writable place in the container.
CacheDir = /build/work/pacman-cache/
# The packages were checked on the host (sha256 and signature, by pacman) before the
# build started; the repository is read-only in here.
SigLevel = Never

[${REPO_NAME}]
Server = file://${REPO_DIR}
EOF
}

json_string() {
    local value="$1"
    [[ "${value}" =~ ^[][A-Za-z0-9@._+:~/\ -]*$ ]] || die "unexpected character in '${value}' for the manifest"
    printf '"%s"' "${value}"
}

# The mkarchiso a build runs (first on the container's PATH), for the provenance: its
# path, sha256 and, when pacman installed it, archiso's package version; null if none.
mkarchiso_manifest() {
    local root="$1" path="" dir sha version_json=null desc
    for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin; do
        if [[ -f "${root}${dir}/mkarchiso" ]]; then
            path="${dir}/mkarchiso"
            break
        fi
    done
    if [[ -z "${path}" ]]; then
        printf 'null\n'
        return 0
    fi
    sha="$(sha256sum "${root}${path}" | cut -d' ' -f1)"
    for desc in "${root}"/var/lib/pacman/local/archiso-[0-9]*/desc; do
        [[ -f "${desc}" ]] || continue
        version_json="$(json_string "$(sed -n '/^%VERSION%$/{n;p;q}' "${desc}")")"
    done
    printf '{"path": "%s", "sha256": "%s", "version": %s}\n' "${path}" "${sha}" "${version_json}"
}

# What pacman installed in the base (its build tools), from its local database, as the
# members of a JSON object: "name": "version", ...; nothing when pacman installed nothing.
base_packages_json() {
    local root="$1" desc name version first=1
    for desc in "${root}"/var/lib/pacman/local/*/desc; do
        [[ -f "${desc}" ]] || continue
        name="$(sed -n '/^%NAME%$/{n;p;q}' "${desc}")"
        version="$(sed -n '/^%VERSION%$/{n;p;q}' "${desc}")"
        [[ -n "${name}" && -n "${version}" ]] || continue
        ((first)) || printf ', '
        first=0
        printf '%s: %s' "$(json_string "${name}")" "$(json_string "${version}")"
    done
}

step_manifest() {
    local root="$1" source_kind
    log "writing ${CONF_DIR}/manifest.json"
    if [[ -n "${from_rootfs}" ]]; then
        source_kind=rootfs
    elif [[ "$(host_kind)" == arch ]]; then
        source_kind=pacstrap
    else
        source_kind=bootstrap
    fi
    install -d -m 0755 -- "${root}${CONF_DIR}"
    local archive_json=null
    [[ -z "${archive_date}" ]] || archive_json="$(json_string "${archive_date}")"
    local mkarchiso_json packages_json
    mkarchiso_json="$(mkarchiso_manifest "${root}")"
    packages_json="$(base_packages_json "${root}")"
    cat >"${root}${CONF_DIR}/manifest.json.tmp" <<EOF
{
  "created": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "source": "${source_kind}",
  "uid_base": ${uid_base},
  "uid_count": ${UID_COUNT},
  "archive_date": ${archive_json},
  "packages": {${packages_json}},
  "mkarchiso": ${mkarchiso_json}
}
EOF
    mv -- "${root}${CONF_DIR}/manifest.json.tmp" "${root}${CONF_DIR}/manifest.json"
}

# Shift every owner of the tree by uid_base (container root = uid_base). chown clears
# setuid/setgid bits and file capabilities, so both are recorded first and restored.
shift_ownership() {
    local root="$1" owner pairs=() pair u g specials=() caps=() entry mode path cap
    owner="$(stat -c %u -- "${root}")"
    if ((owner == uid_base)); then
        log "$root is already shifted to ${uid_base}"
        return 0
    fi
    ((owner == 0)) || die "${root} is owned by UID ${owner}, neither 0 nor ${uid_base}: shifted to another range?"
    mapfile -t pairs < <(find "${root}" -xdev -printf '%U:%G\n' | LC_ALL=C sort -u)
    for pair in "${pairs[@]}"; do
        u="${pair%:*}" g="${pair#*:}"
        ((u < UID_COUNT && g < UID_COUNT)) ||
            die "${root} holds files owned by ${pair}, outside 0..$((UID_COUNT - 1)): mixed or already shifted tree"
    done
    mapfile -d '' -t specials < <(find "${root}" -xdev -type f -perm /6000 -printf '%m %p\0')
    mapfile -t caps < <(find "${root}" -xdev -type f -exec getcap {} + 2>/dev/null)
    log "shifting ownership of ${root} by ${uid_base} (${#pairs[@]} owner pairs, ${#specials[@]} setuid/setgid files, ${#caps[@]} file capabilities)"
    for pair in "${pairs[@]}"; do
        u="${pair%:*}" g="${pair#*:}"
        chown -hR --from="${u}:${g}" "$((uid_base + u)):$((uid_base + g))" -- "${root}"
    done
    for entry in "${specials[@]}"; do
        mode="${entry%% *}" path="${entry#* }"
        chmod -- "${mode}" "${path}"
    done
    for entry in "${caps[@]}"; do
        # getcap prints "<path> <capabilities>"; the capability text has no spaces.
        path="${entry% *}" cap="${entry##* }"
        setcap "${cap}" "${path}"
    done
}

step_shift() {
    shift_ownership "$1"
}

step_publish() {
    log "publishing $1 as ${base}"
    mv -T -- "$1" "${base}"
}

# ---------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    if [[ -n "${wrappers_only}" ]]; then
        ((dry_run)) && log "would write wrappers under ${wrappers_only}/usr/local/sbin" && return 0
        step_wrappers "${wrappers_only}"
        return 0
    fi
    validate_args
    local plan_text plan=() line
    # make_plan runs in a subshell: its refusal (exit 1) must stop us here.
    plan_text="$(make_plan)" || exit
    mapfile -t plan <<<"${plan_text}"
    if ((dry_run)); then
        for line in "${plan[@]}"; do
            printf 'plan: %s\n' "${line}"
            case "${line%% *}" in
                step_bootstrap) printf '  from: %s (signed by %s)\n' "$(bootstrap_url)" "${RELEASE_KEY_FPR}" ;;
                step_pacstrap) printf '  packages: %s\n' "${BASE_PACKAGES[*]}" ;;
                step_keyring) printf '  keyring: %s\n' "${keyring_dir}" ;;
                step_prewarm) printf '  packages: %s into %s/incoming\n' "${packages_file}" "${cache_dir}" ;;
            esac
        done
        return 0
    fi
    ((EUID == 0)) || die "must run as root (it chowns the base to the container's UID range)"
    for line in "${plan[@]}"; do
        "${line%% *}" "${line#* }"
    done
}

main "$@"
