#!/usr/bin/env bash
# Stop k8slite and remove what packaging/install.sh and a running k8slite put on this machine:
# the server (systemd unit or background process), its containerd and the containers under it,
# mounts under the data and run dirs, the k8slite0 bridge, the VXLAN and DNS devices, the
# routes to other nodes' pods, the service proxy's iptables chains, the /k8slite-* cgroups, pod logs,
# the binary, /etc/k8slite and the data dir (/var/lib/k8slite: the cluster's state is lost).
# Debian packages stay installed.
set -uo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
data=/var/lib/k8slite run=/run/k8slite

stop_pid() { # pid: TERM, wait up to 10 s, then KILL
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1"
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$1" 2>/dev/null
}

if [ "$(ps -p 1 -o comm= 2>/dev/null)" = "systemd" ] && [ -f /etc/systemd/system/k8slite.service ]; then
  systemctl disable --now k8slite.service >/dev/null 2>&1
  rm -f /etc/systemd/system/k8slite.service
  systemctl daemon-reload
fi
[ -f "$run/k8slite.pid" ] && stop_pid "$(cat "$run/k8slite.pid")"
# The agent leaves containerd and the containers running on shutdown (like k3s); stop the
# containers' shims and processes, then containerd.
if [ -f "$run/containerd/containerd.pid" ]; then
  for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $run/containerd/containerd.sock"); do
    pkill -KILL -P "$shim" 2>/dev/null
    stop_pid "$shim"
  done
  stop_pid "$(cat "$run/containerd/containerd.pid")"
fi
grep -E " ($data|$run)[/ ]" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m"
done
ip link del k8slite0 2>/dev/null
# The cluster network: the VXLAN device, the cluster DNS dummy device, the routes to the other
# nodes' pod CIDRs (installed with k8slite's own route protocol number), and the service
# proxy's K8SLITE-* chains with the jumps to them from the built-in chains.
ip link del k8slite.1 2>/dev/null
ip link del k8slite-dns 2>/dev/null
ip route flush proto 117 2>/dev/null
if command -v iptables-save >/dev/null; then
  for t in raw nat filter; do
    iptables-save -t "$t" | grep '^-A ' | grep -Ev '^-A K8SLITE-' | grep -E -- '-j K8SLITE-' \
      | while read -r rule; do eval "iptables -t $t -D ${rule#-A }" 2>/dev/null; done
    ours=$(iptables-save -t "$t" | grep -o '^:K8SLITE-[^ ]*' | tr -d ':')
    for c in $ours; do iptables -t "$t" -F "$c" 2>/dev/null; done
    for c in $ours; do iptables -t "$t" -X "$c" 2>/dev/null; done
  done
fi
# NAT rules the CNI plugins (bridge ipMasq, portmap) made for pods that never got a CNI DEL:
# every rule commented with our network's name, then the per-pod chains those rules jumped to.
if command -v iptables-save >/dev/null; then
  chains=$(iptables-save -t nat | grep '^-A ' | grep -F 'name: \"k8slite\"' \
    | grep -o -- '-j CNI-[A-Za-z0-9-]*' | awk '{print $2}' | grep -v '^CNI-HOSTPORT' | sort -u)
  iptables-save -t nat | grep '^-A ' | grep -F 'name: \"k8slite\"' | while read -r rule; do
    eval "iptables -t nat -D ${rule#-A }" 2>/dev/null
  done
  for c in $chains; do iptables -t nat -F "$c" 2>/dev/null; iptables -t nat -X "$c" 2>/dev/null; done
  # portmap's shared chains, once no network has a hostPort left in them.
  if ! iptables-save -t nat | grep -q '^-A CNI-HOSTPORT-DNAT '; then
    iptables-save -t nat | grep '^-A ' | grep -E -- '-j CNI-HOSTPORT-(DNAT|MASQ)( |$)' \
      | grep -Ev '^-A CNI-' | while read -r rule; do
      eval "iptables -t nat -D ${rule#-A }" 2>/dev/null
    done
    for c in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
      iptables -t nat -F "$c" 2>/dev/null
    done
    for c in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
      iptables -t nat -X "$c" 2>/dev/null
    done
  fi
fi
# libcni's cache entries of pods that never got a CNI DEL (their netns lived under $run).
grep -l "\"$run/" /var/lib/cni/results/* 2>/dev/null | xargs -r rm -f
for d in /sys/fs/cgroup/*/k8slite-*; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf /usr/local/bin/k8slite /etc/k8slite "$data" "$run" /var/log/k8slite.log
for d in /var/log/pods/*_*; do [ -d "$d" ] && rm -rf "$d"; done
echo "k8slite removed"
