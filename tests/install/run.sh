#!/usr/bin/env bash
# Installs the build tree at $1 into a temporary prefix and builds and runs the out-of-tree
# project in $2 against it: the path a user's project takes.
set -euo pipefail
build="$1"
source_dir="$2"
prefix="$(mktemp -d -t stella-install.XXXXXX)"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$source_dir" -B "$prefix/project" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$prefix/project" -j2
"$prefix/project/hello"
