#!/usr/bin/env bash
# A root for the 3D build (virgl, venus), as root: Debian 13 (trixie) with
# Mesa (llvmpipe for GL through EGL surfaceless, lavapipe for Vulkan) and
# virglrenderer 1.3 from sid (rutabaga_gfx's `virgl_renderer` feature needs
# 1.3; Debian 13 has 1.1). Sid moves: the virglrenderer 1.3.0-1 .debs this
# was built and tested with are kept in the repository (tests/gpu3d/debs,
# 730 KiB) and installed from there; without them they are fetched from sid
# into $GPU_AIRLOCK_GUEST_CACHE/debs.
# Idempotent. tests/gpu3d/build builds the workspace with `--features
# virgl` inside it; tests/libc/in-root runs what it built there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${GPU_AIRLOCK_GUEST_CACHE:-$here/../guest-cache}
root=$cache/gpu3d
debs=$here/debs
[ -e "$debs/libvirglrenderer1_1.3.0-1_amd64.deb" ] || debs=$cache/debs
export DEBIAN_FRONTEND=noninteractive
mirror=$(awk 'BEGIN { RS = ""; FS = "\n" }
     /Suites:[^\n]*bookworm( |$|\n)/ {
         for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, u, " "); print u[2]; exit }
     }' /etc/apt/sources.list.d/debian.sources)
# The root is also the real guests' Debian userland: shared over 9p,
# read-only (eglinfo, vulkaninfo, kmscube, gl-check built with its GLES
# headers and vk-check with its Vulkan headers and glslang for the 3D
# guest; weston-terminal and a font for the desktop
# guest, tests/tests/guest_wayland.rs, and the applications of
# tests/tests/guest_desktop.rs), and QEMU 11 from trixie-backports
# runs from it for the 3D tests.
ready() {
    chroot "$root" pkg-config --atleast-version=1.3.0 virglrenderer 2>/dev/null &&
        [ -x "$root/usr/bin/eglinfo.x86_64-linux-gnu" ] && [ -e "$root/usr/include/GLES2/gl2.h" ] &&
        [ -x "$root/usr/bin/cpio" ] && [ -x "$root/usr/bin/kmscube" ] &&
        [ -e "$root/usr/include/vulkan/vulkan.h" ] && [ -x "$root/usr/bin/glslangValidator" ] &&
        [ -x "$root/usr/bin/weston-terminal" ] && [ -x "$root/usr/bin/foot" ] &&
        [ -x "$root/usr/bin/gtk4-demo" ] && [ -x "$root/usr/bin/qterminal" ] &&
        [ -x "$root/usr/bin/Xwayland" ] && [ -x "$root/usr/bin/xterm" ] &&
        [ -x "$root/usr/lib/systemd/systemd" ] && [ -x "$root/usr/bin/udevadm" ] && chroot "$root" id tester >/dev/null 2>&1 &&
        chroot "$root" qemu-system-x86_64 --version 2>/dev/null | grep -q "version 11\."
}
if ready; then
    echo "gpu3d root ready in $root"
    exit 0
fi
if [ ! -x "$root/usr/bin/apt-get" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$root"
    debootstrap --variant=minbase trixie "$root" "$mirror" >/dev/null
fi
printf 'Types: deb\nURIs: %s\nSuites: trixie-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > "$root/etc/apt/sources.list.d/trixie-backports.sources"
chroot "$root" apt-get update -qq
chroot "$root" apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config \
    libepoxy-dev libdrm-dev libgbm-dev libegl-dev libgles-dev libgl1-mesa-dri libegl-mesa0 \
    libegl1 mesa-vulkan-drivers libvulkan1 mesa-utils-bin vulkan-tools cpio kmscube \
    weston fonts-dejavu-core libvulkan-dev glslang-tools >/dev/null
# The desktop guest's applications (tests/tests/guest_desktop.rs): a
# terminal that needs a seat, an event printer, GTK 3 and 4, Qt 6, X11
# through Xwayland.
chroot "$root" apt-get install -y -qq --no-install-recommends foot wev gtk-3-examples \
    gtk-4-examples qterminal qt6-wayland xwayland xterm x11-apps >/dev/null
# The guest that boots this root with systemd, installs the guest package
# and logs a user in (its PAM session starts the user's manager, whose
# socket unit starts gpu-airlock-guest): systemd, logind's PAM module and
# the system bus, udev (which gives render nodes to every user, as Debian
# does), and the user.
chroot "$root" apt-get install -y -qq --no-install-recommends systemd udev libpam-systemd dbus >/dev/null
chroot "$root" id tester >/dev/null 2>&1 || chroot "$root" useradd -m -u 1000 -s /bin/sh tester
chroot "$root" apt-get install -y -qq --no-install-recommends -t trixie-backports \
    qemu-system-x86 >/dev/null
mkdir -p "$debs"
if ! ls "$debs"/libvirglrenderer-dev_1.3*.deb >/dev/null 2>&1; then
    # Sid's Release file may be older than its Valid-Until on a mirror
    # snapshot: the packages are still the ones wanted.
    printf 'Types: deb\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" > "$root/etc/apt/sources.list.d/sid.sources"
    chroot "$root" apt-get -o Acquire::Check-Valid-Until=false update -qq
    (cd "$debs" && chroot "$root" sh -c 'cd /tmp && apt-get -o Acquire::Check-Valid-Until=false download -t sid libvirglrenderer1 libvirglrenderer-dev virgl-server' &&
        mv "$root"/tmp/*.deb "$debs"/)
    rm "$root/etc/apt/sources.list.d/sid.sources"
    chroot "$root" apt-get update -qq
fi
cp "$debs"/*.deb "$root/tmp/"
chroot "$root" sh -c 'apt-get install -y -qq --no-install-recommends /tmp/*.deb >/dev/null && rm /tmp/*.deb'
chroot "$root" apt-get clean
chroot "$root" pkg-config --modversion virglrenderer
echo "gpu3d root ready in $root"
