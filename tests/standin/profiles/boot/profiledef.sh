#!/usr/bin/env bash
# shellcheck disable=SC2034
# A stand-in profile whose ISO boots, as releng's does: BIOS through SYSLINUX (El Torito
# and the isohybrid MBR), UEFI through systemd-boot in an EFI system partition image.
# Its boot loader entries add console=ttyS0, so the serial console sees the boot.

iso_name="isorunner-boot"
iso_label="ISORUNNER_BOOT"
iso_publisher="isorunner tests <https://example.invalid/isorunner>"
iso_application="isorunner stand-in boot profile"
iso_version="1.0"
install_dir="arch"
buildmodes=('iso')
bootmodes=('bios.syslinux' 'uefi.systemd-boot')
arch="x86_64"
pacman_conf="pacman.conf"
airootfs_image_type="squashfs"
airootfs_image_tool_options=('-comp' 'gzip')
file_permissions=(
    ["/etc/shadow"]="0:0:400"
)
