#!/usr/bin/env bash
# Install what k8slite needs from Debian's packages, only what is missing.
#   prereqs.sh          build prerequisites + what a node runs (containerd, runc, CNI plugins,
#                       iptables)
#   prereqs.sh --test   also what the test suite needs (busybox-static for the test images,
#                       iproute2 and util-linux's nsenter for the e2e harness's network
#                       namespaces, python3-venv for the official Python client, kubectl)
set -euo pipefail
want_test=false
[ "${1:-}" = "--test" ] && want_test=true
# The sbin directories hold iptables, ip and containerd's helpers; a non-login root shell may
# lack them.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_file() { [ -e "$1" ] || missing+=("$2"); }
# Debian package state "install ok installed"; anything else (absent, unpacked but never
# configured, half-installed) counts as missing.
need_pkg() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ] || missing+=("$1")
}

# build
need_cmd gcc gcc
need_cmd make make
need_cmd pkg-config pkg-config
need_cmd protoc protobuf-compiler
need_cmd curl curl
# run: the agent supervises Debian's containerd, which runs runc; pods get their network from
# the distro's CNI plugins in /usr/lib/cni, whose bridge/portmap plugins exec `iptables`.
need_cmd containerd containerd
need_cmd runc runc
need_file /usr/lib/cni/bridge containernetworking-plugins
need_file /usr/lib/cni/host-local containernetworking-plugins
need_file /usr/lib/cni/portmap containernetworking-plugins
need_file /usr/lib/cni/loopback containernetworking-plugins
# iptables: the package can be present but unconfigured (dpkg state `iU`: its alternatives were
# never set up, so there is no /usr/sbin/iptables, only iptables-nft/-legacy). Both cases count
# as missing; the install below configures it.
need_pkg iptables
need_cmd iptables iptables
# the service proxy deletes stale UDP conntrack entries with conntrack(8)
need_cmd conntrack conntrack
if $want_test; then
  need_pkg busybox-static
  need_cmd ip iproute2
  need_cmd nsenter util-linux
  need_cmd tar tar
  need_cmd sha256sum coreutils
  # the official Python client runs from a venv (tests/run.sh)
  need_pkg python3-venv
fi

if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  if [ "$(id -u)" -ne 0 ]; then
    echo "prerequisite missing: ${missing[*]} (run as root so they can be installed with apt-get)" >&2
    exit 1
  fi
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Finish configuring packages left unpacked (the `iU` iptables above) before installing.
  dpkg --configure --pending >/dev/null 2>&1 || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v iptables >/dev/null 2>&1; then
  echo "prerequisite missing: iptables (the package is installed but /usr/sbin/iptables is absent; try dpkg --configure iptables)" >&2
  exit 1
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
