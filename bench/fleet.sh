#!/usr/bin/env bash
# The fleet pass (issue 11): one `certkeeper renew` over many deployments on many API keys, against Pebble,
# knotd and emqx-standin with the vendor's real limits and a slow `pending`. What it measures: bench/README.md.
#
#   EXTRA_CONC=48 bench/fleet.sh        the full sizes, as reported (~20 min, nearly all of it waiting on pending)
#   FLEET_N=6 FLEET_KEYS=2 BIG_N=40 BIG_KEYS=4 BIG_DUE=8 PENDING_MS=2000 bench/fleet.sh     a smoke run (~30 s)
#
# Environment:
#   SCENARIOS="fleet seq big"   fleet: FLEET_N due on FLEET_KEYS keys, default concurrency; seq: the same with
#                               concurrency 1 (one after another on each key, keys in parallel); big: BIG_N
#                               deployments on BIG_KEYS keys, BIG_DUE of them due
#   FLEET_N=48 FLEET_KEYS=8 BIG_N=1000 BIG_KEYS=50 BIG_DUE=100
#   EXTRA_CONC=N                also run "fleet" with concurrency N (e.g. 48: every deployment at once)
#   PENDING_MS=10000 POLL=2s    the stand-in's pending phase after a write; certkeeper's poll_interval
#   WAIT_TIMEOUT=DUR            set [emqx.*] wait_timeout (default: certkeeper's); a diagnostic, since the polls
#                               are paced over it (see bench/README.md)
#   STAGGER=1                   due expiries 1 s apart instead of equal (a diagnostic of the start order)
#   CERTKEEPER_BIN, STANDIN_BIN use these binaries instead of `cargo build --release`
#   OUT=DIR                     also keep results.jsonl, table.md and every scenario's logs there
#   KEEP=1                      keep the bed's temp dir
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

SCENARIOS=${SCENARIOS:-"fleet seq big"}
FLEET_N=${FLEET_N:-48}
FLEET_KEYS=${FLEET_KEYS:-8}
BIG_N=${BIG_N:-1000}
BIG_KEYS=${BIG_KEYS:-50}
BIG_DUE=${BIG_DUE:-100}
PENDING_MS=${PENDING_MS:-10000}
export POLL=${POLL:-2s} WAIT_TIMEOUT=${WAIT_TIMEOUT:-} STAGGER=${STAGGER:-}
ZONE=example.test.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------------- packages
need=()
command -v pebble >/dev/null || need+=(pebble)
command -v knotd >/dev/null || need+=(knot)
command -v kdig >/dev/null || need+=(knot-dnsutils)
[[ -x /usr/bin/time ]] || need+=(time)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
		die "apt-get install ${need[*]} failed (run apt-get update first?)"
fi

# ---------------------------------------------------------------------------------------------------- binaries
if [[ -z ${CERTKEEPER_BIN:-} || -z ${STANDIN_BIN:-} ]]; then
	log "cargo build --release -p certkeeper -p emqx-standin"
	(cd "$REPO" && cargo build --release -p certkeeper -p emqx-standin --bins --quiet)
	target_dir=${CARGO_TARGET_DIR:-$REPO/target}
	CERTKEEPER_BIN=${CERTKEEPER_BIN:-$target_dir/release/certkeeper}
	STANDIN_BIN=${STANDIN_BIN:-$target_dir/release/emqx-standin}
fi
[[ -x $CERTKEEPER_BIN && -x $STANDIN_BIN ]] || die "no certkeeper / emqx-standin binary"
# The bed cds into its temp dir: relative paths given by the caller must not break.
CERTKEEPER_BIN=$(realpath "$CERTKEEPER_BIN") STANDIN_BIN=$(realpath "$STANDIN_BIN")

# ---------------------------------------------------------------------------------------------------- the bed
# The same bed as bench/run.sh (kept separate rather than factored out: run.sh's setup is interleaved with its
# uacme CA-bundle namespace and other tools' packages, and could not be re-verified here without them).
WORK=$(mktemp -d /tmp/certkeeper-fleet.XXXXXX)
chmod 700 "$WORK"
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ -n ${KEEP:-} ]]; then
		echo "bed files kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports, TCP and UDP alike (knotd needs both), picked now and held until all are chosen.
read -r DNS_PORT ACME_PORT MGMT_PORT HTTP_PORT TLS_PORT API_PORT < <(python3 - 6 <<'EOF'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        t.close(); continue
    held += [t, u]; ports.append(p)
print(*ports)
EOF
)

log "bed in $WORK (dns :$DNS_PORT, acme :$ACME_PORT, vendor api :$API_PORT)"
cd "$WORK"
# A run lasts an hour: a `cargo build --release` elsewhere must not swap the binaries between two passes.
cp "$CERTKEEPER_BIN" certkeeper && cp "$STANDIN_BIN" emqx-standin
CERTKEEPER_BIN=$WORK/certkeeper STANDIN_BIN=$WORK/emqx-standin
TSIG_SECRET=$(head -c 32 /dev/urandom | base64)
printf '%s\n' "$TSIG_SECRET" >tsig.secret
printf 's3cret\n' >emqx.secret
chmod 600 tsig.secret emqx.secret

mkdir -p knot/db
cat >knot/example.test.zone <<'EOF'
$TTL 60
@ SOA ns hostmaster 1 60 60 600 60
@ NS ns
ns A 127.0.0.1
EOF
cat >knot/knot.conf <<EOF
server:
    listen: 127.0.0.1@$DNS_PORT
    rundir: $WORK/knot
database:
    storage: $WORK/knot/db
log:
  - target: stderr
    any: warning
key:
  - id: acme-update.
    algorithm: hmac-sha256
    secret: $TSIG_SECRET
acl:
  - id: acme
    key: acme-update.
    action: update
    update-type: [TXT]
zone:
  - domain: $ZONE
    storage: $WORK/knot
    file: example.test.zone
    acl: acme
    journal-content: none
    zonefile-sync: -1
EOF
knotd -c knot/knot.conf >knot.log 2>&1 </dev/null &
PIDS+=($!)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
	-subj "/CN=certkeeper bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
	-subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 \
	-extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') 2>/dev/null
cat >pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$WORK/leaf.pem", "privateKey": "$WORK/leaf.key", "httpPort": $HTTP_PORT,
  "tlsPort": $TLS_PORT, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
# NOSLEEP: Pebble otherwise sleeps up to 15 s before each validation, which would swamp what is measured here.
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
	pebble -config pebble.json -dnsserver "127.0.0.1:$DNS_PORT" -strict=false >pebble.log 2>&1 </dev/null &
PIDS+=($!)

"$STANDIN_BIN" --listen "127.0.0.1:$API_PORT" >standin.out 2>standin.log </dev/null &
PIDS+=($!)

DIR_URL=https://127.0.0.1:$ACME_PORT/dir
API=http://127.0.0.1:$API_PORT
for _ in $(seq 100); do
	if kdig @127.0.0.1 -p "$DNS_PORT" +short SOA "$ZONE" 2>/dev/null | grep -q hostmaster &&
		curl -sf --cacert ca.pem "$DIR_URL" >/dev/null && curl -sf "$API/_admin/log" >/dev/null; then
		break
	fi
	sleep 0.1
done
curl -sf --cacert ca.pem "$DIR_URL" >/dev/null || die "pebble did not start: $(tail -5 pebble.log)"
kdig @127.0.0.1 -p "$DNS_PORT" +short SOA "$ZONE" | grep -q hostmaster || die "knotd did not start: $(cat knot.log)"
curl -sf "$API/_admin/log" >/dev/null || die "emqx-standin did not start: $(tail -5 standin.log)"

# The vendor's real limits, stated explicitly rather than trusting the stand-in's defaults to stay so.
curl -sS --fail-with-body -X PUT -H 'content-type: application/json' "$API/_admin/settings" \
	-d "{\"pending\":$PENDING_MS,\"get_limit\":60,\"write_limit\":6,\"window\":3600}" >admin.out ||
	die "stand-in settings: $(cat admin.out)"

export BED_API=$API BED_DIR_URL=$DIR_URL BED_CA=$WORK/ca.pem BED_DNS_PORT=$DNS_PORT BED_TSIG=$WORK/tsig.secret
export BED_SECRET=$WORK/emqx.secret

# ---------------------------------------------------------------------------------------------------- passes
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# pass NAME DEPLOYMENTS KEYS DUE CONCURRENCY: a fresh state dir, fresh API keys (the stand-in's hour-long
# windows must not carry over from one scenario to the next) and one `certkeeper renew`.
pass() {
	local name=$1 n=$2 keys=$3 due=$4 conc=$5 dir=$WORK/runs/$1 t0 t1 code=0
	log "$name: $n deployments on $keys keys, $due due, concurrency $conc (load $(cut -d' ' -f1-3 /proc/loadavg))"
	mkdir -p "$dir"
	python3 "$BENCH_DIR/fleet.py" setup "$name" "$n" "$keys" "$due" "$conc" "$dir"
	# JOURNAL_STREAM would drop the timestamps that the plan time is read from.
	t0=$(date +%s%N)
	env -u JOURNAL_STREAM RUST_LOG=certkeeper=info,warn /usr/bin/time -v -o "$dir/time.txt" \
		"$CERTKEEPER_BIN" --config "$dir/certkeeper.toml" renew >"$dir/stdout" 2>"$dir/stderr" </dev/null || code=$?
	t1=$(date +%s%N)
	((code == 0)) || printf '%s: certkeeper exited %s; last lines:\n%s\n' "$name" "$code" "$(tail -5 "$dir/stderr")" >&2
	curl -sf "$API/_admin/log" >"$dir/standin-log.json"
	python3 "$BENCH_DIR/fleet.py" measure "$name" "$dir" "$t0" "$t1" "$code" >>"$RESULTS"
	tail -1 "$RESULTS" >&2
}

# The reference is measured twice, before and after the fleets, so a drift in machine load shows.
pass solo1 1 1 1 8
for scen in $SCENARIOS; do
	case $scen in
	fleet) pass fleet "$FLEET_N" "$FLEET_KEYS" "$FLEET_N" 8 ;;
	seq) pass seq "$FLEET_N" "$FLEET_KEYS" "$FLEET_N" 1 ;;
	big) pass big "$BIG_N" "$BIG_KEYS" "$BIG_DUE" 8 ;;
	*) die "unknown scenario $scen" ;;
	esac
	if [[ $scen == fleet && -n ${EXTRA_CONC:-} ]]; then
		pass "fleet-c$EXTRA_CONC" "$FLEET_N" "$FLEET_KEYS" "$FLEET_N" "$EXTRA_CONC"
	fi
done
pass solo2 1 1 1 8

# ---------------------------------------------------------------------------------------------------- report
log "report"
python3 "$BENCH_DIR/fleet.py" table "$RESULTS" | tee "$WORK/table.md"
if [[ -n ${OUT:-} ]]; then
	mkdir -p "$OUT"
	cp "$RESULTS" "$WORK/table.md" "$OUT/"
	cp -r "$WORK/runs" "$OUT/"
	echo "raw results in $OUT" >&2
fi
