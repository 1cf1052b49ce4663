#!/bin/bash
# isorunner: list ISOs' contents for the rebuild check (read by runner/publish/isocompare.py).
# Runs inside the build sandbox on the base's own tools (xorriso, unsquashfs, coreutils,
# findutils): the ISOs are the builds' output and are not trusted.
#
# usage: isodiff.sh OUT_DIR WORK_DIR LABEL=ISO [LABEL=ISO ...]
# For each ISO it writes into OUT_DIR (records NUL-separated, so any path survives):
#   LABEL.areas   "<name>\t<sha256>" lines: the system area (MBR, GPT, boot code: the
#                 first 32 KiB), and each partition and El Torito boot image that starts
#                 past it (the appended EFI system partition above all)
#   LABEL.pvd     xorriso's report of the primary volume descriptor, one field a line
#   LABEL.tree    8 fields per path of the ISO 9660 tree: type, octal mode, uid, gid,
#                 size, mtime, link target, path (find -printf %y %m %U %G %s %T@ %l %P)
#   LABEL.sums    "<sha256>  ./<path>" of each regular file (sha256sum -z)
#   LABEL.images  "<n>", "<path>" pairs: the squashfs images found in the tree, opened
#   LABEL.<n>.tree, LABEL.<n>.sums  the same two listings for the inside of image n
# Extended attributes are not listed. Trees are extracted under WORK_DIR one at a time
# and removed after listing, so the disk holds at most one ISO tree and one image.
set -euo pipefail

out="$1"
work="$2"
shift 2

list_tree() {
    local dir="$1" prefix="$2"
    (cd "${dir}" && find . -mindepth 1 -printf '%y\0%m\0%U\0%G\0%s\0%T@\0%l\0%P\0') >"${prefix}.tree"
    (cd "${dir}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum -z --) >"${prefix}.sums"
}

hash_range() {
    local iso="$1" start="$2" size="$3"
    dd if="${iso}" iflag=skip_bytes,count_bytes skip="${start}" count="${size}" bs=1M status=none |
        sha256sum | cut -d' ' -f1
}

is_number() {
    [[ "$1" =~ ^[0-9]{1,12}$ ]]
}

# The system area and the partitions / boot images past it, from xorriso's own report.
# Every number is checked before arithmetic uses it.
list_areas() {
    local iso="$1" report line n start size lba blocks
    report="$(xorriso -report_about SORRY -indev "${iso}" \
        -report_system_area plain -report_el_torito plain 2>/dev/null)" || report=""
    printf 'system area\t%s\n' "$(hash_range "${iso}" 0 32768)"
    while IFS= read -r line; do
        n="" start="" size="" lba="" blocks=""
        case "${line}" in
            'GPT start and size :'*) read -r n start size _ <<<"${line#*:}" ;;
            'MBR partition      :'*) read -r n _ _ start size _ <<<"${line#*:}" ;;
            'El Torito boot img :'*) read -r n _ _ _ _ _ _ lba _ <<<"${line#*:}" ;;
            'El Torito img blks :'*) read -r n blocks _ <<<"${line#*:}" ;;
            *) continue ;;
        esac
        is_number "${n}" || continue
        if is_number "${start}" && is_number "${size}" && ((start * 512 > 32768)); then
            printf '%s partition %s\t%s\n' "${line:0:3}" "${n}" \
                "$(hash_range "${iso}" $((start * 512)) $((size * 512)))"
        elif is_number "${lba}"; then
            lbas[n]="${lba}"
        elif is_number "${blocks}" && is_number "${lbas[n]:-}"; then
            printf 'El Torito boot image %s\t%s\n' "${n}" \
                "$(hash_range "${iso}" $((lbas[n] * 2048)) $((blocks * 2048)))"
        fi
    done <<<"${report}"
}

for spec in "$@"; do
    label="${spec%%=*}"
    iso="${spec#*=}"
    declare -a lbas=()
    list_areas "${iso}" >"${out}/${label}.areas"
    # The first line names the drive, i.e. this ISO's own path: not part of the image.
    xorriso -report_about SORRY -indev "${iso}" -pvd_info 2>/dev/null | grep -v "^Drive current:" >"${out}/${label}.pvd" || :
    rm -rf -- "${work}"
    mkdir -p -- "${work}/iso"
    xorriso -report_about SORRY -osirrox on -indev "${iso}" -extract / "${work}/iso" >/dev/null
    list_tree "${work}/iso" "${out}/${label}"
    : >"${out}/${label}.images"
    count=0
    while IFS= read -r -d '' path; do
        [[ "$(head -c 4 -- "${work}/iso/${path}")" == hsqs ]] || continue
        count=$((count + 1))
        printf '%s\0%s\0' "${count}" "${path}" >>"${out}/${label}.images"
        # Status 2 is unsquashfs's "non-fatal errors" (an xattr or device node it could not
        # make here); the listing is still complete for comparing.
        unsquashfs -no-progress -quiet -d "${work}/image" "${work}/iso/${path}" >/dev/null || (($? == 2))
        list_tree "${work}/image" "${out}/${label}.${count}"
        rm -rf -- "${work}/image"
    done < <(cd "${work}/iso" && find . -type f -size +4k -printf '%P\0' | LC_ALL=C sort -z)
    rm -rf -- "${work}"
done
