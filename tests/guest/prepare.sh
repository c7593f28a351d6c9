#!/usr/bin/env bash
# Prepares what the real-peer tests need, on Debian 12 as root: QEMU 10 from
# bookworm-backports, a Debian kernel with its virtio-gpu modules and a
# busybox initramfs (tests/tests/guest.rs), weston (tests/tests/wayland.rs),
# and QEMU 11 from trixie-backports in a debootstrapped trixie root, run
# through tests/guest/qemu11 (tests/tests/guest_blob.rs); that root's glibc
# 2.41 is also the second C library the jailed suites run on (tests/libc/). Idempotent; the
# kernel, initramfs and trixie root are cached in $GPU_AIRLOCK_GUEST_CACHE
# (default tests/guest-cache, ignored by git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${GPU_AIRLOCK_GUEST_CACHE:-$here/../guest-cache}
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive

# bookworm-backports, derived from the machine's own Debian source (same
# mirror, same key), never naming a mirror here.
backports=/etc/apt/sources.list.d/gpu-airlock-bookworm-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    awk 'BEGIN { RS = ""; FS = "\n" }
         /Suites:[^\n]*bookworm( |$|\n)/ && !done {
             for (i = 1; i <= NF; i++) {
                 if ($i ~ /^Suites:/) print "Suites: bookworm-backports"
                 else if ($i !~ /^#/) print $i
             }
             done = 1
         }' /etc/apt/sources.list.d/debian.sources > "$backports"
fi

# The machine's own Debian mirror: the URIs of its bookworm stanza.
mirror=$(awk 'BEGIN { RS = ""; FS = "\n" }
     /Suites:[^\n]*bookworm( |$|\n)/ {
         for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, u, " "); print u[2]; exit }
     }' /etc/apt/sources.list.d/debian.sources)

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu)
[ -x /usr/lib/qemu/vhost-user-gpu ] || need+=(qemu)
command -v busybox >/dev/null && busybox --list | grep -qx insmod || need+=(busybox)
command -v cpio >/dev/null || need+=(cpio)
[ -x /sbin/depmod ] || need+=(kmod)
command -v weston >/dev/null || need+=(weston)
command -v sway >/dev/null && command -v wtype >/dev/null && command -v grim >/dev/null &&
    command -v wl-copy >/dev/null || need+=(sway)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
[ -x /usr/sbin/libvirtd ] && command -v virsh >/dev/null || need+=(libvirt)
# The jailed suites on Debian 13's C library (tests/libc/): patchelf gives
# the binaries the trixie root's loader, bubblewrap enters that root with
# pivot_root for the package test, and the kernel's syscall numbers name
# what tests/libc/seccomp-audit finds.
command -v patchelf >/dev/null || need+=(patchelf)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v prlimit >/dev/null || need+=(util-linux)
[ -r /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] || need+=(linux-libc-dev)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-system-gui >/dev/null
    # weston (headless) is the real compositor of the cross-domain tests.
    apt-get install -y -qq busybox-static cpio kmod weston >/dev/null
    # A compositor with a seat, and a keyboard, screenshots and a
    # clipboard client (data-control: no window needed) for it.
    apt-get install -y -qq --no-install-recommends sway wtype grim wl-clipboard >/dev/null
    # The operators' tests: systemd-analyze, systemd-socket-activate, man.
    apt-get install -y -qq systemd man-db >/dev/null
    # The libvirt test: Debian's libvirt 9 (daemon, QEMU driver, virsh);
    # the test starts the daemons itself where nothing else has.
    apt-get install -y -qq --no-install-recommends libvirt-daemon-system libvirt-clients >/dev/null
    apt-get install -y -qq patchelf bubblewrap util-linux linux-libc-dev >/dev/null
fi

# QEMU 11.1, the first with SHMEM on its generic vhost-user device, is
# built for trixie's glibc: a minimal trixie root from the same mirror, with
# qemu-system-x86 from trixie-backports (under a minute here).
trixie=$cache/trixie
if ! "$here/qemu11" --version 2>/dev/null | grep -q "version 11\."; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq
        apt-get install -y -qq debootstrap >/dev/null
    }
    rm -rf "$trixie"
    debootstrap --variant=minbase trixie "$trixie" "$mirror" >/dev/null
    printf 'Types: deb\nURIs: %s\nSuites: trixie-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" > "$trixie/etc/apt/sources.list.d/trixie-backports.sources"
    chroot "$trixie" apt-get update -qq
    chroot "$trixie" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -t trixie-backports qemu-system-x86 >/dev/null
    chroot "$trixie" apt-get clean
    "$here/qemu11" --version | head -n 1
fi

# The newest Debian 12 amd64 kernel (not -cloud: it has no virtio-gpu).
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
kver=${pkg#linux-image-}
if [ ! -f "$cache/vmlinuz-$kver" ] ||
    ! grep -qxs overlay.ko "$cache/modules-$kver/load-order"; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q "$pkg" 2>/dev/null && dpkg-deb -x ./*.deb root)
    /sbin/depmod -b "$tmp/root" "$kver"
    cp "$tmp/root/boot/vmlinuz-$kver" "$cache/vmlinuz-$kver"
    rm -rf "$cache/modules-$kver"
    mkdir -p "$cache/modules-$kver"
    moddir="$tmp/root/lib/modules/$kver"
    # virtio-gpu and virtio-pci with their dependencies, loadable in order,
    # qemu_fw_cfg, through which the test hands the guest its pattern, and
    # 9p over virtio, through which the 3D guest gets its Debian userland
    # (tests/tests/gpu3d.rs), and overlayfs, which makes that userland
    # writable for the guest that boots it with systemd
    # (tests/tests/guest_desktop.rs).
    : > "$cache/modules-$kver/load-order"
    for top in kernel/drivers/virtio/virtio_pci.ko kernel/drivers/gpu/drm/virtio/virtio-gpu.ko \
        kernel/drivers/firmware/qemu_fw_cfg.ko kernel/net/9p/9pnet_virtio.ko kernel/fs/9p/9p.ko \
        kernel/fs/overlayfs/overlay.ko; do
        deps=$(awk -v m="$top:" '$1 == m { for (i = NF; i > 1; i--) print $i }' "$moddir/modules.dep")
        for mod in $deps $top; do
            name=$(basename "$mod")
            if ! grep -qx "$name" "$cache/modules-$kver/load-order"; then
                cp "$moddir/$mod" "$cache/modules-$kver/$name"
                echo "$name" >> "$cache/modules-$kver/load-order"
            fi
        done
    done
    rm -rf "$tmp"
fi

# The initramfs: busybox, the modules, and our /init.
root=$(mktemp -d)
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/modules"
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$cache/modules-$kver"/* "$root/modules/"
cp "$here/init" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$cache/initramfs.cpio.gz")
rm -rf "$root"
ln -sf "vmlinuz-$kver" "$cache/vmlinuz"
echo "guest ready in $cache: kernel $kver, $(wc -l < "$cache/modules-$kver/load-order") modules"

# The real guests' Debian userland (and the 3D build's root): Debian 13
# with Mesa, weston's clients and sid's virglrenderer, shared with guests
# over 9p (tests/tests/gpu3d.rs, tests/tests/guest_wayland.rs).
bash "$here/../gpu3d/prepare.sh"
