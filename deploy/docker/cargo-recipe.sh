#!/usr/bin/env bash
# Docker build helper: copies the workspace's dependency "recipe" (Cargo.toml/Cargo.lock of every crate, build
# scripts and non-Rust inputs such as .proto files) into $2, with every other .rs file replaced by a stub. Building
# the recipe compiles all dependencies in a layer that only changes when a manifest or the lockfile does, so an edit
# to the server's code rebuilds the project's own crates only. (The idea of cargo-chef, without the extra tool.)
# With a third argument, also copies the crates' full sources there (and nothing else of the context), so that
# editing files outside the Rust crates (models/, deploy/, docs) does not rebuild the server either.
set -euo pipefail
src="$1" out="$2" sources="${3:-}"
cd "$src"
mkdir -p "$out"
cp Cargo.toml Cargo.lock "$out/"
[[ -d .cargo ]] && cp -r .cargo "$out/"
find . -mindepth 2 -name Cargo.toml -not -path './target/*' -printf '%h\n' | while read -r crate; do
  # Non-Rust files matter only as build script inputs (e.g. .proto files): copy them for crates with a build.rs.
  has_build=false; [[ -f "$crate/build.rs" ]] && has_build=true
  find "$crate" -type f -not -path '*/target/*' | while read -r f; do
    case "$f" in
      */Cargo.toml | */build.rs) ;;
      *.rs) ;;
      *) $has_build || continue ;;
    esac
    mkdir -p "$out/$(dirname "$f")"
    case "$f" in
      */build.rs) cp "$f" "$out/$f" ;;
      */main.rs | */bin/*.rs | */tests/*.rs | */benches/*.rs | */examples/*.rs) echo 'fn main() {}' >"$out/$f" ;;
      *.rs) : >"$out/$f" ;;
      *) cp "$f" "$out/$f" ;;
    esac
  done
done

if [[ -n "$sources" ]]; then
  mkdir -p "$sources"
  cp Cargo.toml Cargo.lock "$sources/"
  [[ -d .cargo ]] && cp -r .cargo "$sources/"
  find . -mindepth 2 -name Cargo.toml -not -path './target/*' -printf '%h\n' | while read -r crate; do
    mkdir -p "$sources/$(dirname "$crate")"
    cp -r "$crate" "$sources/$crate"
  done
fi
