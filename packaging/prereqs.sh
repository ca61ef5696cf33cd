#!/usr/bin/env bash
# Install what k8slite needs from Debian's packages, only what is missing.
#   prereqs.sh          build + run prerequisites
#   prereqs.sh --test   also what the test suite needs
set -euo pipefail
want_test=false
[ "${1:-}" = "--test" ] && want_test=true

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd gcc gcc
need_cmd make make
need_cmd pkg-config pkg-config
need_cmd protoc protobuf-compiler
need_cmd curl curl
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "prerequisite missing: ${missing[*]} (run as root so they can be installed with apt-get)" >&2
    exit 1
  fi
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "prerequisite missing: cargo (a Rust toolchain >= 1.89, e.g. from rustup)" >&2
  exit 1
fi
if $want_test && ! command -v kubectl >/dev/null 2>&1; then
  echo "prerequisite missing: kubectl (the tests drive the real kubectl; versioned kubectl.1.27 and kubectl.1.33 are looked up next to it)" >&2
  exit 1
fi
exit 0
