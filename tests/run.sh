#!/usr/bin/env bash
# The whole test suite: installs missing prerequisites (as root, with apt-get), builds, checks
# formatting and lints, runs every test. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/k8slite-target}"
export CARGO_TERM_COLOR=never

packaging/prereqs.sh --test

echo "== build"
cargo build --workspace --all-targets --locked
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The official Python client from PyPI, a real client for tests/tests/e2e_python_client.rs
# (kept between runs like the target dir).
export K8SLITE_PYTHON_VENV="${K8SLITE_PYTHON_VENV:-/var/tmp/k8slite-pyclient-37.0.3}"
if ! "$K8SLITE_PYTHON_VENV/bin/python" -c 'import kubernetes' >/dev/null 2>&1; then
  echo "== python client venv"
  python3 -m venv "$K8SLITE_PYTHON_VENV"
  "$K8SLITE_PYTHON_VENV/bin/pip" install -q --disable-pip-version-check "kubernetes==37.0.3"
fi
export K8SLITE_PYTHON="$K8SLITE_PYTHON_VENV/bin/python"
echo "== test"
export K8SLITE_BIN="$CARGO_TARGET_DIR/debug/k8slite"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked --no-fail-fast -- --test-threads="${K8SLITE_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The oldest supported kubectl against the suites about kubectl's own behaviour (discovery,
# OpenAPI, apply/patch/edit, printing). The control-loop suites drive the same requests and run
# once, with the default kubectl.
echo "== kubectl 1.27 against the kubectl suites"
set +e
K8SLITE_TEST_KUBECTL=1.27 cargo test -p k8slite-tests --locked --no-fail-fast \
  --test kubectl_discovery --test kubectl_apply --test kubectl_write --test crd \
  -- --test-threads="${K8SLITE_TEST_THREADS:-2}" 2>&1 | tee -a "$log"
status127=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] && status=$status127
passed=$( (grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" || true) | awk '{s+=$4} END {print s+0}')
failed=$( (grep -Eo '[0-9]+ failed;' "$log" || true) | awk '{s+=$1} END {print s+0}')
echo "summary: $passed passed, $failed failed"
exit "$status"
