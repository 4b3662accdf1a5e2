#!/usr/bin/env bash
# The system tools the Rust build needs beyond rustup's toolchain: cmake, make and nasm, which build the vendored
# libjpeg-turbo (the `turbojpeg` crate) with its SIMD code (nasm on x86_64; NEON needs only the C compiler),
# and a C compiler. Installed from Debian's apt when missing and running as root; otherwise says what to install.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v cc >/dev/null || need+=(gcc libc6-dev)
if [[ "$(uname -m)" == x86_64 ]]; then
  command -v nasm >/dev/null || need+=(nasm)
fi
[[ ${#need[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} (to build libjpeg-turbo)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "the build needs ${need[*]}: install them with your package manager (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
