#!/usr/bin/env bash
# Installs what the ARM checks need on a fresh Debian 12 machine, and nothing when warm:
#   - Debian's rustc-web 1.96 toolchain with its std source (build-std for thumbv7em) and lld-22;
#   - aarch64 cross gcc, qemu-user and the arm64 Rust std (runtime tests under qemu-aarch64);
#   - qemu-system-arm unpacked into $LORKD_CACHE/qemu-arm (the packaged one would replace this
#     image's newer qemu-utils), with the shared libraries it needs installed from apt.
# Prints the qemu-system-arm path on stdout (everything else goes to stderr).
# See ../shared/embedded/RECIPE.md for why each piece is needed.
set -euo pipefail
cache="${LORKD_CACHE:-$HOME/.cache/lorkd}"
qdir="$cache/qemu-arm"
qemu="$qdir/usr/bin/qemu-system-arm"
sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive

log() { echo "[setup-arm] $*" >&2; }

pkgs=(rustc-web cargo-web rust-web-src lld-22
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libstd-rust-web-dev:arm64)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }

updated=0
apt_update() {
  if [ "$updated" = 0 ]; then
    log "apt-get update"
    $sudo_ apt-get update -qq >&2
    updated=1
  fi
}

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64"
  $sudo_ dpkg --add-architecture arm64
fi

missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  log "apt-get install ${missing[*]}"
  $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x "$qemu" ]; then
  apt_update
  log "unpacking qemu-system-arm into $qdir"
  rm -rf "$qdir.tmp" && mkdir -p "$qdir.tmp/debs"
  (cd "$qdir.tmp/debs" && apt-get download qemu-system-arm qemu-system-data >&2)
  for f in "$qdir.tmp"/debs/*.deb; do dpkg -x "$f" "$qdir.tmp/root"; done
  rm -rf "$qdir" && mv "$qdir.tmp/root" "$qdir" && mv "$qdir.tmp/debs" "$qdir/debs" && rmdir "$qdir.tmp"
fi

# The shared libraries the unpacked binary still lacks: install the library packages
# qemu-system-arm depends on (first alternative of each, version constraints dropped).
if ldd "$qemu" | grep -q 'not found'; then
  apt_update
  deps=$(dpkg-deb -f "$qdir"/debs/qemu-system-arm_*.deb Depends | tr ',' '\n' |
    sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep '^lib' | sort -u)
  log "installing qemu's libraries: $(echo $deps)"
  # shellcheck disable=SC2086
  $sudo_ apt-get install -y -qq --no-install-recommends $deps >&2
  if ldd "$qemu" | grep 'not found' >&2; then
    log "qemu-system-arm still misses the libraries above"
    exit 1
  fi
fi

for tool in /usr/bin/rustc /usr/bin/cargo aarch64-linux-gnu-gcc qemu-aarch64; do
  command -v "$tool" >/dev/null || { log "missing after install: $tool"; exit 1; }
done
echo "$qemu"
