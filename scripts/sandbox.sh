#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs one full certkeeper renewal against a local sandbox:
# real Pebble (ACME), real knotd (DNS, RFC 2136 + TSIG) and emqx-standin (the vendor API), all on free
# loopback ports, started and stopped by examples/sandbox.rs. Files stay in ./sandbox/ (gitignored).
#
#   scripts/sandbox.sh              install what is missing, build, run the sandbox
#   scripts/sandbox.sh --deps-only  only install what is missing (used by .ci/run)
#
# Installs, only when missing: the Debian packages pebble, knot, knot-dnsutils, unbound, mosquitto, mosquitto-clients,
# procps, redis-server, redis-tools (note: the knot and mosquitto packages also enable their system services), a C compiler (aws-lc-sys builds C code), and a Rust toolchain via rustup.
# Uses sudo for apt-get unless run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "need root for: $* (run as root or install sudo)" >&2
        exit 1
    fi
}

# `command -v` misses /usr/sbin for normal users on Debian, where knotd lives.
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

install_packages() {
    local missing=()
    have pebble || missing+=(pebble)
    have knotd || missing+=(knot)
    { have kdig && have knsupdate; } || missing+=(knot-dnsutils)
    # The CNAME delegation test: Pebble resolves through a real recursive resolver, which follows the CNAME
    # into another zone (an authoritative knotd does not).
    have unbound || missing+=(unbound)
    # The files target tests run a real mosquitto and reload it with /usr/bin/kill (procps; `command -v kill`
    # would find the shell builtin).
    have mosquitto || missing+=(mosquitto)
    have mosquitto_pub || missing+=(mosquitto-clients)
    [ -x /usr/bin/kill ] || [ -x /bin/kill ] || missing+=(procps)
    # The metrics tests scrape the daemon with a real Prometheus and check its output with promtool.
    { have prometheus && have promtool; } || missing+=(prometheus)
    # The e-mail notification tests talk to a real SMTP server (aiosmtpd, in Debian's own python3).
    /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
    # The DCS tests run a real Redis with TLS and PING it with redis-cli.
    have redis-server || missing+=(redis-server)
    have redis-cli || missing+=(redis-tools)
    have cc || missing+=(gcc libc6-dev)
    if ! have cargo && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
        have curl || missing+=(curl ca-certificates)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        say "Installing Debian packages: ${missing[*]}"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

install_rust() {
    if ! have cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! have cargo; then
        say "Installing the Rust toolchain with rustup (into ~/.cargo and ~/.rustup)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    local want have_version
    want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
    have_version=$(rustc --version | awk '{print $2}')
    if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "$have_version" | sort -V | head -n1)" != "$want" ]; then
        if have rustup; then
            say "rustc $have_version is older than $want: updating the stable toolchain"
            rustup update stable
        else
            echo "rustc $have_version is older than the required $want; install a current toolchain with" \
                "rustup (https://rustup.rs) and run this again" >&2
            exit 1
        fi
    fi
}

install_packages
install_rust
if [ "${1:-}" = "--deps-only" ]; then
    exit 0
fi

say "Building certkeeper, emqx-standin and the sandbox"
cargo build --workspace --bins --example sandbox

say "Running the sandbox (examples/sandbox.rs)"
exec cargo run --quiet --example sandbox
