#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only Rust installed.
# Installs what the tests need (Prometheus, promtool, amtool, PostgreSQL, the Python Prometheus
# client, PyYAML), then
# runs: rustfmt check, clippy with -D warnings (all features, and the library alone with the
# feature sets users build), rustdoc with -D warnings, and every test (unit, integration, doc),
# among them the tests against a real Prometheus server, a PostgreSQL server, promtool and the
# Python client's parsers, with cargo-nextest when it is installed and `cargo test` otherwise,
# and the ring test of a build without the `otlp` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need_install+=(prometheus)
if [ ${#need_install[@]} -gt 0 ]; then
    echo "==> installing Prometheus (promtool and the server) for the tests"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # Debian's package may start a server on :9090; the tests start their own on free ports.
    if pgrep -x prometheus >/dev/null 2>&1; then $SUDO pkill -x prometheus || true; fi
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    echo "==> installing PostgreSQL (the sqlx tests initdb and start a server of their own)"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # Debian's package may start a cluster on :5432; the tests start their own on free ports
    # (as the `postgres` user the package creates, when they run as root).
    $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
if ! command -v amtool >/dev/null 2>&1; then
    echo "==> installing Alertmanager (amtool) for the monitoring tests"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
    # The package may start an Alertmanager on :9093; the tests only use amtool.
    if pgrep -x prometheus-alertmanager >/dev/null 2>&1; then $SUDO pkill -x prometheus-alertmanager || true; fi
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "==> installing Python 3 (the OpenMetrics tests run the official client's parsers)"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi
PROMETHEUS_CLIENT_VERSION="0.26.0"
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    echo "==> installing the Python Prometheus client (its parsers read both expositions in the tests)"
    # A Debian system Python refuses plain `pip install` (PEP 668); the package is test-only.
    python3 -m pip install --quiet "prometheus_client==${PROMETHEUS_CLIENT_VERSION}" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "prometheus_client==${PROMETHEUS_CLIENT_VERSION}"
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "==> installing PyYAML (the monitoring-kit tests parse its YAML files)"
    python3 -m pip install --quiet "pyyaml==6.0.2" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "pyyaml==6.0.2"
fi
promtool --version | head -1
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
"${PG_BIN:-$(dirname "$(command -v initdb)")}/postgres" --version
prometheus --version 2>&1 | head -1
amtool --version 2>&1 | head -1
python3 -c 'import importlib.metadata as m; print("prometheus_client", m.version("prometheus_client"))'

if ! rustup component list --installed 2>/dev/null | grep -q rustfmt; then rustup component add rustfmt; fi
if ! rustup component list --installed 2>/dev/null | grep -q clippy; then rustup component add clippy; fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --all-targets --all-features -- -D warnings

echo "==> cargo clippy without default features"
cargo clippy --lib --no-default-features -- -D warnings

# The library as users build it: the default features, and the default plus each optional one
# (the library only: tests, examples and benches are checked above, with every feature).
for features in "" grpc sentry reqwest; do
    echo "==> cargo clippy --lib, default features${features:+ + $features}"
    cargo clippy --lib ${features:+--features "$features"} -- -D warnings
done

echo "==> cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

echo "==> build the demo (the tests spawn it)"
cargo build --example demo

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --all-features --no-fail-fast
else
    cargo test --all-features --no-fail-fast --lib --tests
fi
echo "==> without the otlp feature: kept traces stay in the ring"
# Only the test that needs this build (its filter matching nothing would pass: check it ran).
no_otlp=$(cargo test --no-default-features --features axum --test integration without_the_otlp_feature) \
    || { echo "$no_otlp"; exit 1; }
echo "$no_otlp"
grep -q "without_the_otlp_feature_kept_traces_stay_in_the_ring ... ok" <<<"$no_otlp" \
    || { echo "the test without the otlp feature did not run"; exit 1; }

echo "==> doc tests"
cargo test --all-features --doc
