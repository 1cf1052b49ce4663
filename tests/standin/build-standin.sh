#!/usr/bin/env bash
# Build isorunner's test stand-in once per machine (contract: tests/standin/CONTRACT.md):
#   <dir>/base/              Debian 13 (trixie) + archiso's tools + the stand-in mkarchiso,
#                            adopted by scripts/setup-sandbox.sh --from-rootfs
#   <dir>/packages/          tiny packages built with makepkg (setuid, file capability,
#                            system user, install scriptlets) that fill the base's mirror
#                            and, for booting ISOs, `linux` (Debian's kernel), `syslinux`
#                            and `systemd` (its systemd-boot EFI binary only), repackaged
#   <dir>/profiles/minimal/  a tiny archiso profile that builds with them (no boot modes)
#   <dir>/profiles/boot/     a profile whose ISO boots on BIOS and UEFI (bios.syslinux,
#                            uefi.systemd-boot, console=ttyS0)
#   <dir>/repo/              those packages as repository `isorunner` (repo-add), the
#                            per-build repository the sandbox's own tests bind
#   <dir>/upstream/          a signed "upstream" for package sync (build-upstream below):
#                            www/ (served over HTTP by the tests), keyring/ (trusts the
#                            test packager key), signing/ (the test keys), stamp
#   <dir>/stamp              hash of every input; when it matches, nothing is done
# <dir> is $ISORUNNER_STANDIN_DIR or /var/cache/isorunner-test/standin. The debootstrap
# result is cached apart (<dir>/debootstrap/), keyed by suite, mirror and package list,
# so editing the stand-in's scripts does not download Debian again; so are the host's
# Debian packages the boot packages are made from (<dir>/debs/, `apt-get download`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${here}/../.." && pwd)"
dir="${ISORUNNER_STANDIN_DIR:-/var/cache/isorunner-test/standin}"

readonly SUITE=trixie
readonly MIRROR=http://deb.debian.org/debian
readonly DEB_PACKAGES=(pacman-package-manager arch-install-scripts xorriso squashfs-tools erofs-utils
    mtools dosfstools libarchive-tools zstd uidmap busybox-static qemu-system-x86 ovmf)
# The host's Debian packages that the stand-in's boot packages repackage (any Debian
# release will do; the files are self-contained): the kernel comes from the versioned
# package that linux-image-amd64 depends on.
readonly KERNEL_META=linux-image-amd64
readonly BOOT_DEBS=(isolinux syslinux-common pxelinux systemd-boot-efi)
# Kernel modules the stand-in initramfs loads (with their dependencies): CD-ROM on IDE
# and AHCI, USB disks, ISO 9660, squashfs on a loop device, the overlay root, a NIC.
readonly KERNEL_MODULES=(ata_piix ahci sr_mod sd_mod usb_storage xhci_pci ehci_pci
    isofs squashfs loop overlay e1000)
readonly BUILD_USER=isorunner-build
readonly UID_BASE=2147352576
# Set by build_upstream for make_repo: the test GnuPG home and the packager key.
signing=""
packager=""

say() {
    printf 'build-standin: %s\n' "$*"
}

die() {
    printf 'build-standin: error: %s\n' "$*" >&2
    exit 1
}

# Hash of the files under the given paths (names, modes and contents, symlink targets
# included) and of the words before them.
files_hash() {
    local words="$1"
    shift
    (
        cd "${repo_root}"
        printf '%s\n' "${words}"
        find "$@" \( -name __pycache__ -o -name '*.md' \) -prune -o \
            \( -type f -o -type l \) -printf '%p %m %l\n' | LC_ALL=C sort
        find "$@" \( -name __pycache__ -o -name '*.md' \) -prune -o -type f -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

# Hash of every input of the base, packages and profile (the upstream has its own).
inputs_hash() {
    files_hash "${SUITE} ${MIRROR} ${DEB_PACKAGES[*]} ${UID_BASE}" \
        tests/standin/build-standin.sh tests/standin/mkarchiso tests/standin/packages \
        tests/standin/profiles scripts/setup-sandbox.sh
}

# debootstrap into <dir>/debootstrap/rootfs unless a rootfs for the same key exists.
debootstrap_rootfs() {
    "${repo_root}/tests/debootstrap-cache.sh" "${dir}/debootstrap" "${SUITE}" "${MIRROR}" \
        "${DEB_PACKAGES[@]}" || die "could not make the Debian root (above)"
}

# `apt-get download` each package into <dir>/debs unless a file of it is there already.
# The kernel meta package is resolved to the versioned image package it depends on.
fetch_debs() {
    local cache="${dir}/debs" name kernel wanted=()
    mkdir -p -- "${cache}"
    if ! compgen -G "${cache}/linux-image-*-amd64_*.deb" >/dev/null; then
        kernel="$(apt-cache depends "${KERNEL_META}" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')"
        if [[ -z "${kernel}" ]]; then
            apt-get update -qq >/dev/null
            kernel="$(apt-cache depends "${KERNEL_META}" | awk '/Depends: linux-image-/ {print $2; exit}')"
        fi
        [[ -n "${kernel}" ]] || die "apt-cache cannot resolve ${KERNEL_META} to a kernel package"
        wanted+=("${kernel}")
    fi
    for name in "${BOOT_DEBS[@]}"; do
        compgen -G "${cache}/${name}_*.deb" >/dev/null || wanted+=("${name}")
    done
    ((${#wanted[@]})) || return 0
    say "apt-get download ${wanted[*]}"
    (cd "${cache}" && apt-get -q download -o APT::Sandbox::User=root "${wanted[@]}" >/dev/null 2>&1) || {
        apt-get update -qq >/dev/null
        (cd "${cache}" && apt-get -q download -o APT::Sandbox::User=root "${wanted[@]}" >/dev/null) ||
            die "apt-get download ${wanted[*]} failed"
    }
}

# The module names given and every module they depend on, as paths relative to the
# modules directory, read from the kernel's modules.dep.
module_closure() {
    local modules_dep="$1"
    shift
    awk -v want="$*" '
        {
            path = $1; sub(/:$/, "", path)
            name = path; sub(/.*\//, "", name); sub(/\.ko(\..*)?$/, "", name); gsub(/-/, "_", name)
            by_name[name] = path
            deps[path] = ""
            for (i = 2; i <= NF; i++) deps[path] = deps[path] " " $i
        }
        END {
            n = split(want, queue, " ")
            for (i = 1; i <= n; i++) {
                if (!(queue[i] in by_name)) { print "unknown module " queue[i] > "/dev/stderr"; exit 1 }
                queue[i] = by_name[queue[i]]
            }
            while (n > 0) {
                path = queue[n--]
                if (path in seen) continue
                seen[path] = 1
                print path
                m = split(deps[path], more, " ")
                for (i = 1; i <= m; i++) queue[++n] = more[i]
            }
        }' "${modules_dep}"
}

# Unpack the downloaded Debian packages into the source tarballs of the stand-in's
# `linux`, `syslinux` and `systemd` PKGBUILDs (Arch's file layout).
boot_sources() {
    local work="$1" cache="${dir}/debs" unpack="${dir}/build/debs" deb kver modules path
    rm -rf -- "${unpack}"
    mkdir -p -- "${unpack}/root" "${unpack}/linux" "${unpack}/syslinux" "${unpack}/systemd"
    for deb in "${cache}"/*.deb; do
        dpkg-deb -x "${deb}" "${unpack}/root"
    done
    modules="$(find "${unpack}/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit)"
    kver="${modules##*/}"
    [[ -n "${kver}" && -f "${unpack}/root/boot/vmlinuz-${kver}" ]] || die "no kernel in ${cache}"
    # Debian's package has no modules.dep (its postinst runs depmod): busybox makes one.
    "${dir}/build/rootfs/usr/bin/busybox" depmod -b "${unpack}/root" "${kver}" ||
        die "depmod failed for kernel ${kver}"
    local dest="${unpack}/linux/usr/lib/modules/${kver}"
    mkdir -p -- "${dest}"
    install -m 0644 -- "${unpack}/root/boot/vmlinuz-${kver}" "${dest}/vmlinuz"
    printf 'linux\n' >"${dest}/pkgbase"
    module_closure "${modules}/modules.dep" "${KERNEL_MODULES[@]}" >"${unpack}/modules.list" ||
        die "cannot resolve the kernel modules ${KERNEL_MODULES[*]}"
    while read -r path; do
        install -D -m 0644 -- "${modules}/${path}" "${dest}/${path}"
    done <"${unpack}/modules.list"
    # modules.dep of the modules kept (their dependencies are all kept).
    awk 'NR == FNR { keep[$1 ":"] = 1; next } $1 in keep' "${unpack}/modules.list" \
        "${modules}/modules.dep" >"${dest}/modules.dep"
    tar -C "${unpack}/linux" -cf "${work}/linux/linux-kernel.tar" usr

    dest="${unpack}/syslinux/usr/lib/syslinux/bios"
    mkdir -p -- "${dest}"
    install -m 0644 -- "${unpack}/root/usr/lib/ISOLINUX/isolinux.bin" \
        "${unpack}/root/usr/lib/ISOLINUX/isohdpfx.bin" "${unpack}/root/usr/lib/PXELINUX/lpxelinux.0" \
        "${unpack}/root/usr/lib/syslinux/memdisk" "${unpack}/root/usr/lib/syslinux/modules/bios/"*.c32 "${dest}/"
    tar -C "${unpack}/syslinux" -cf "${work}/syslinux/syslinux-bios.tar" usr

    dest="${unpack}/systemd/usr/lib/systemd/boot/efi"
    mkdir -p -- "${dest}"
    install -m 0644 -- "${unpack}/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "${dest}/"
    tar -C "${unpack}/systemd" -cf "${work}/systemd/systemd-boot.tar" usr
    rm -rf -- "${unpack}"
}

# Arch's dosfstools 4.2 ignores SOURCE_DATE_EPOCH (random volume serial, current time);
# Debian's adds support by a patch (#1087568). Hide the variable from Debian's mkfs.fat so
# the stand-in base leaks like an Arch base, and the base's mkfs.fat wrapper
# (scripts/setup-sandbox.sh) is what makes the EFI system partition image reproducible.
arch_like_mkfs_fat() {
    local sbin="$1/usr/sbin"
    mv -- "${sbin}/mkfs.fat" "${sbin}/mkfs.fat.debian"
    printf '%s\n' '#!/bin/sh' \
        '# isorunner stand-in: behave like Arch'"'"'s dosfstools 4.2 (build-standin.sh).' \
        'exec env -u SOURCE_DATE_EPOCH /usr/sbin/mkfs.fat.debian "$@"' >"${sbin}/mkfs.fat"
    chmod 0755 -- "${sbin}/mkfs.fat"
}

# makepkg refuses root: build as a dedicated unprivileged system user.
ensure_build_user() {
    id "${BUILD_USER}" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "${BUILD_USER}"
}

# makepkg every package directory of <work> into <out>, as the build user; extra
# arguments are environment assignments for makepkg (e.g. a version).
makepkg_all() {
    local work="$1" out="$2" pkg
    shift 2
    command -v makepkg >/dev/null || die "makepkg is missing (Debian: makepkg; scripts/install installs it)"
    ensure_build_user
    mkdir -p -- "${out}"
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
                env HOME="${work}" TMPDIR="${work}" SOURCE_DATE_EPOCH=1700000000 "$@" \
                makepkg --config "${work}/makepkg.conf" --force --nodeps --noconfirm \
                >"${pkg%/}.log" 2>&1
        ) || die "makepkg failed for $(basename -- "${pkg}"); see ${pkg%/}.log"
    done
    chown -R root:root "${out}"
}

build_packages() {
    local rootfs="$1" out="$2" work="${dir}/build/makepkg"
    rm -rf -- "${work}" "${out}"
    mkdir -p -- "${work}"
    cp -r -- "${here}/packages/." "${work}/"
    cp -- "${rootfs}/usr/bin/busybox" "${work}/isorunner-base/busybox"
    boot_sources "${work}"
    makepkg_all "${work}" "${out}"
}

# <dir>/repo: the stand-in packages as repository `isorunner`, unsigned (the sandbox's
# offline pacman.conf has SigLevel = Never: packages are checked on the host).
build_repo() {
    local new="${dir}/repo.new"
    rm -rf -- "${new}"
    mkdir -p -- "${new}"
    cp -- "${dir}/packages"/*.pkg.tar.zst "${new}/"
    repo-add --quiet "${new}/isorunner.db.tar.gz" "${new}"/*.pkg.tar.zst >/dev/null
    rm -rf -- "${dir}/repo"
    mv -T -- "${new}" "${dir}/repo"
}

# ---------------------------------------------------------------------------------------
# The upstream: what an Arch mirror and the Arch Linux Archive look like, in miniature.
#   www/mirror/core/os/x86_64     the stand-in packages                (signed)
#   www/mirror/extra/os/x86_64    isorunner-hello -> isorunner-libhello, isorunner-pinned 2.0,
#                                 isorunner-untrusted (signed by a key the keyring does not trust)
#   www/mirror/baddb/os/x86_64    isorunner-libhello; the database signed by the untrusted key
#   www/archive/repos/2024/01/15/{core,extra}/os/x86_64   as above, isorunner-pinned 1.0
#   www/archive/repos/2024/02/15/{core,extra}/os/x86_64   as above, isorunner-pinned 2.0
#   www/custom/custom/os/x86_64   isorunner-custom, nothing signed (an extra_repos repository)
#   keyring/                      pacman keyring: the packager key lsigned, the stranger's
#                                 key present but not trusted
#   signing/                      GnuPG home with both secret keys

upstream_hash() {
    files_hash "$(<"${dir}/stamp")" tests/standin/upstream
}

gen_key() {
    local home="$1" name="$2" email="$3"
    gpg --homedir "${home}" --batch --quiet --passphrase '' --quick-gen-key \
        "${name} <${email}>" ed25519 sign never 2>/dev/null
    gpg --homedir "${home}" --batch --with-colons --list-keys "${email}" 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}'
}

# make_repo <dir> <repo name> <db key or ""> <package>...: packages without a .sig
# beside them are signed by the packager key unless the db key is empty.
make_repo() {
    local target="$1" name="$2" key="$3" pkg
    shift 3
    mkdir -p -- "${target}"
    for pkg in "$@"; do
        cp -- "${pkg}" "${target}/"
        [[ ! -f "${pkg}.sig" ]] || cp -- "${pkg}.sig" "${target}/"
        if [[ -n "${key}" && ! -f "${pkg}.sig" ]]; then
            GNUPGHOME="${signing}" gpg --batch --quiet --detach-sign --no-armor \
                --local-user "${packager}" "${target}/$(basename -- "${pkg}")"
        fi
    done
    if [[ -n "${key}" ]]; then
        GNUPGHOME="${signing}" repo-add --quiet --sign --key "${key}" \
            "${target}/${name}.db.tar.gz" "${target}"/*.pkg.tar.zst >/dev/null 2>&1 ||
            die "repo-add failed for ${target}"
    else
        repo-add --quiet "${target}/${name}.db.tar.gz" "${target}"/*.pkg.tar.zst >/dev/null ||
            die "repo-add failed for ${target}"
    fi
    rm -f -- "${target}/${name}.files"* "${target}"/*.old*
}

build_upstream() {
    local up="${dir}/upstream.new" work="${dir}/build/upstream" out
    rm -rf -- "${up}" "${work}"
    mkdir -p -- "${up}" "${work}/v1" "${work}/v2"
    out="${work}/out"
    cp -r -- "${here}/upstream/." "${work}/v2/"
    cp -r -- "${here}/upstream/isorunner-pinned" "${work}/v1/"
    makepkg_all "${work}/v2" "${out}"
    makepkg_all "${work}/v1" "${out}" ISORUNNER_PINNED_VERSION=1.0

    signing="${up}/signing"
    install -d -m 0700 -- "${signing}"
    packager="$(gen_key "${signing}" "isorunner test packager" packager@isorunner.invalid)"
    stranger="$(gen_key "${signing}" "isorunner untrusted stranger" stranger@isorunner.invalid)"
    gpg --homedir "${signing}" --batch --quiet --detach-sign --no-armor --local-user "${stranger}" \
        "${out}/isorunner-untrusted-1.0-1-any.pkg.tar.zst"

    local www="${up}/www" core=("${dir}/packages"/*.pkg.tar.zst) date pinned
    local common=("${out}/isorunner-libhello-1.0-1-any.pkg.tar.zst" "${out}/isorunner-hello-1.0-1-any.pkg.tar.zst")
    make_repo "${www}/mirror/core/os/x86_64" core "${packager}" "${core[@]}"
    make_repo "${www}/mirror/extra/os/x86_64" extra "${packager}" "${common[@]}" \
        "${out}/isorunner-pinned-2.0-1-any.pkg.tar.zst" "${out}/isorunner-untrusted-1.0-1-any.pkg.tar.zst"
    make_repo "${www}/mirror/baddb/os/x86_64" baddb "${stranger}" "${common[0]}"
    for date in 2024/01/15 2024/02/15; do
        pinned="2.0"
        [[ "${date}" != 2024/01/15 ]] || pinned="1.0"
        make_repo "${www}/archive/repos/${date}/core/os/x86_64" core "${packager}" "${core[@]}"
        make_repo "${www}/archive/repos/${date}/extra/os/x86_64" extra "${packager}" "${common[@]}" \
            "${out}/isorunner-pinned-${pinned}-1-any.pkg.tar.zst"
    done
    make_repo "${www}/custom/custom/os/x86_64" custom "" "${out}/isorunner-custom-1.0-1-any.pkg.tar.zst"

    # The keyring builds use: made by pacman-key, as setup-sandbox.sh makes the real one.
    local keyring="${up}/keyring"
    pacman-key --gpgdir "${keyring}" --init >/dev/null 2>&1 || die "pacman-key --init failed"
    gpg --homedir "${signing}" --batch --armor --export "${packager}" "${stranger}" >"${work}/keys.asc"
    pacman-key --gpgdir "${keyring}" --add "${work}/keys.asc" >/dev/null 2>&1 ||
        die "pacman-key --add failed"
    pacman-key --gpgdir "${keyring}" --lsign-key "${packager}" >/dev/null 2>&1 ||
        die "pacman-key --lsign-key failed"
    printf '%s\n' "${packager}" >"${up}/packager.fpr"
    gpgconf --homedir "${keyring}" --kill all 2>/dev/null || :
    gpgconf --homedir "${signing}" --kill all 2>/dev/null || :
    rm -rf -- "${keyring}"/S.* "${signing}"/S.*

    rm -rf -- "${dir}/upstream" "${work}"
    mv -T -- "${up}" "${dir}/upstream"
}

main() {
    local start hash
    start="${SECONDS}"
    hash="$(inputs_hash)"
    if [[ -f "${dir}/stamp" && "$(<"${dir}/stamp")" == "${hash}" && -d "${dir}/base" &&
        -d "${dir}/profiles/minimal" && -d "${dir}/profiles/boot" && -d "${dir}/repo" ]]; then
        if [[ -f "${dir}/upstream/stamp" && "$(<"${dir}/upstream/stamp")" == "$(upstream_hash)" ]]; then
            say "up to date at ${dir} (stamp ${hash:0:12})"
            return 0
        fi
        ((EUID == 0)) || die "must run as root (makepkg as a build user)"
        build_upstream
        upstream_hash >"${dir}/upstream/stamp"
        say "built ${dir}/upstream in $((SECONDS - start)) s"
        return 0
    fi
    ((EUID == 0)) || die "must run as root (debootstrap, chown to the sandbox UID range)"
    mkdir -p -- "${dir}"
    rm -f -- "${dir}/stamp"

    debootstrap_rootfs
    fetch_debs

    local rootfs="${dir}/build/rootfs"
    rm -rf -- "${dir}/build"
    mkdir -p -- "${dir}/build"
    cp -a --one-file-system -- "${dir}/debootstrap/rootfs" "${rootfs}"
    install -m 0755 -- "${here}/mkarchiso" "${rootfs}/usr/local/bin/mkarchiso"
    arch_like_mkfs_fat "${rootfs}"

    build_packages "${rootfs}" "${dir}/packages"

    rm -rf -- "${dir}/base.next" "${dir}/base.next.new"
    "${repo_root}/scripts/setup-sandbox.sh" --from-rootfs "${rootfs}" --no-keyring \
        --base "${dir}/base.next" --uid-base "${UID_BASE}" >"${dir}/build/setup-sandbox.log" ||
        die "setup-sandbox.sh failed; see ${dir}/build/setup-sandbox.log"
    if [[ -e "${dir}/base" ]]; then
        mv -T -- "${dir}/base" "${dir}/base.old"
    fi
    mv -T -- "${dir}/base.next" "${dir}/base"
    rm -rf -- "${dir}/base.old" "${rootfs}"

    rm -rf -- "${dir}/profiles"
    mkdir -p -- "${dir}/profiles"
    cp -a -- "${here}/profiles/minimal" "${here}/profiles/boot" "${dir}/profiles/"
    build_repo

    printf '%s\n' "${hash}" >"${dir}/stamp"
    build_upstream
    upstream_hash >"${dir}/upstream/stamp"
    say "built ${dir} in $((SECONDS - start)) s: base/, packages/ ($(find "${dir}/packages" -name '*.pkg.tar.zst' | wc -l) packages), repo/, profiles/{minimal,boot}/, upstream/"
}

main "$@"
