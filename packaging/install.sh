#!/usr/bin/env bash
# Build k8slite, install it to /usr/local/bin and start `k8slite server`: as a systemd unit when
# systemd runs the machine, else in the background (log /var/log/k8slite.log, pid
# /run/k8slite/k8slite.pid). Re-running upgrades the binary and restarts it. Missing Debian
# packages (build tools; containerd, runc, containernetworking-plugins, iptables for the node
# agent) are installed first by packaging/prereqs.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/k8slite-target}"
packaging/prereqs.sh
echo "== building (release)"
cargo build --release --locked -p k8slite
install -m 0755 "$CARGO_TARGET_DIR/release/k8slite" /usr/local/bin/k8slite.new
mv -f /usr/local/bin/k8slite.new /usr/local/bin/k8slite
mkdir -p /etc/k8slite /var/lib/k8slite /run/k8slite
[ -f /etc/k8slite/config.yaml ] || install -m 0644 packaging/config.yaml /etc/k8slite/config.yaml

if [ "$(ps -p 1 -o comm= 2>/dev/null)" = "systemd" ]; then
  install -m 0644 packaging/k8slite.service /etc/systemd/system/k8slite.service
  systemctl daemon-reload
  systemctl enable k8slite.service >/dev/null
  systemctl restart k8slite.service
  echo "k8slite started by systemd (journalctl -u k8slite -f)"
else
  pidfile=/run/k8slite/k8slite.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
     && [ "$(readlink -f "/proc/$(cat "$pidfile")/exe" 2>/dev/null)" = /usr/local/bin/k8slite ]; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  setsid /usr/local/bin/k8slite server >>/var/log/k8slite.log 2>&1 < /dev/null &
  echo $! > "$pidfile"
  echo "k8slite started (pid $(cat "$pidfile"), log /var/log/k8slite.log)"
fi
for _ in $(seq 1 100); do
  if [ -f /etc/k8slite/k8slite.yaml ] && KUBECONFIG=/etc/k8slite/k8slite.yaml kubectl get --raw /readyz >/dev/null 2>&1; then
    echo "ready: export KUBECONFIG=/etc/k8slite/k8slite.yaml; kubectl get ns"
    exit 0
  fi
  sleep 0.2
done
echo "k8slite did not become ready within 20 s; see the log" >&2
exit 1
