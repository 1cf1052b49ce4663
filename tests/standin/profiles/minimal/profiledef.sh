#!/usr/bin/env bash
# shellcheck disable=SC2034
# The smallest archiso profile the isorunner stand-in builds: no boot modes (the
# stand-in packages carry no kernel), the stand-in packages, one file_permissions entry.

iso_name="isorunner-minimal"
iso_label="ISORUNNER_MINIMAL"
iso_publisher="isorunner tests <https://example.invalid/isorunner>"
iso_application="isorunner stand-in profile"
iso_version="1.0"
install_dir="arch"
buildmodes=('iso')
bootmodes=()
arch="x86_64"
pacman_conf="pacman.conf"
airootfs_image_type="squashfs"
airootfs_image_tool_options=('-comp' 'gzip')
file_permissions=(
    ["/etc/shadow"]="0:0:400"
)
