#!/usr/bin/env bash
# Rebuilds the DeviceScript RP2040 runtime images in vendor/rp2040-runtime/ from the pinned source
# commits in vendor/rp2040-runtime/sources.txt, applies our patches (vendor/rp2040-runtime/patches/),
# and checks every image byte for byte against the committed one.
#
#   scripts/rp2040-runtime/build.sh --sources DIR [--update] [--keep]
#
# DIR holds one bare git directory per repository, named <owner>+<name>/repo (a mirror of each
# repository, e.g. what a fetch of github:<owner>/<name> leaves). The toolchain is Debian's:
#   apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib cmake
# --update writes the new images and PROVENANCE.md instead of comparing (after a patch or a bump).
# CI does not run this: it uses the committed images and needs no network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
vendor="$root/vendor/rp2040-runtime"
sources="" update=0 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sources) sources="$2"; shift 2 ;;
    --update) update=1; shift ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 --sources DIR [--update] [--keep]" >&2; exit 2 ;;
  esac
done
[ -n "$sources" ] || { echo "build.sh: --sources DIR is required (bare git mirrors <owner>+<name>/repo)" >&2; exit 2; }
command -v arm-none-eabi-gcc >/dev/null || { echo "build.sh: arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib" >&2; exit 2; }

# a fixed path: the sources' __FILE__ strings end up in the image (panics name their file)
tree=/tmp/citymeter-rp2040-runtime
rm -rf "$tree"; mkdir -p "$tree"
[ "$keep" = 1 ] || trap 'rm -rf "$tree"' EXIT

# sources.txt: <repo> <commit> <path in tree> [<paths inside the repo to take>...]
while read -r repo commit path subset; do
  case "$repo" in ''|'#'*) continue ;; esac
  git_dir="$sources/${repo/\//+}/repo"
  [ -d "$git_dir" ] || { echo "build.sh: no mirror of $repo at $git_dir" >&2; exit 2; }
  mkdir -p "$tree/$path"
  # shellcheck disable=SC2086  # subset is a list of paths
  git -C "$git_dir" archive --format=tar "$commit" $subset | tar -x -C "$tree/$path"
done < "$vendor/sources.txt"

build_arch() { # arch (rp2040 | rp2040w) [build dir name]
  local arch="$1" dir="$tree/build/${2:-$1}"
  mkdir -p "$dir"
  echo "add_compile_options(-ffile-prefix-map=$tree=.)" > "$dir/config.cmake"
  echo "const char app_fw_version[] = \"v2.16.0-citymeter\";" > "$dir/version.c"
  local opts=()
  [ "$arch" = rp2040w ] && opts+=(-DPICO_BOARD=pico_w)
  (cd "$dir" && cmake ../.. "${opts[@]}" >cmake.log 2>&1) || { tail -20 "$dir/cmake.log"; exit 1; }
  make -j"$(nproc)" -C "$dir" >"$dir/make.log" 2>&1 || { tail -30 "$dir/make.log"; exit 1; }
}

status=0
check() { # built-image name
  if [ "$update" = 1 ]; then
    cp "$1" "$vendor/$2"
    echo "build.sh: wrote vendor/rp2040-runtime/$2"
  elif cmp -s "$1" "$vendor/$2"; then
    echo "build.sh: $2: identical to the committed image ($(sha256sum "$1" | cut -c1-16)…)"
  else
    echo "build.sh: $2 DIFFERS from the committed image" >&2
    status=1
  fi
}

# the plain Pico image without our patches: the tests show what each patch fixes on it
build_arch rp2040 rp2040-upstream
check "$tree/build/rp2040-upstream/src/devsrunner.uf2" devicescript-rp2040-upstream.uf2

for p in "$vendor"/patches/*.patch; do
  [ -e "$p" ] || continue
  echo "build.sh: applying $(basename "$p")"
  patch -d "$tree" -p1 --no-backup-if-mismatch < "$p"
done

# rp2040: the plain Pico (no CYW43), which rp2040js can run; rp2040w: the Pico W for the field
for arch in ${ARCHES:-rp2040 rp2040w}; do
  build_arch "$arch"
  check "$tree/build/$arch/src/devsrunner.uf2" "devicescript-$arch.uf2"
  arm-none-eabi-size "$tree/build/$arch/src/devsrunner.elf" | tail -1
done
[ "$update" = 0 ] || (cd "$vendor" && sha256sum ./*.uf2 > SHA256SUMS && echo "build.sh: SHA256SUMS updated")
exit $status
