#!/usr/bin/env bash
# certkeeper against lego, certbot and uacme on one loopback bed (Pebble + knotd + emqx-standin).
# One command: bench/run.sh   (N=3 bench/run.sh for a quick look). What it measures and why: bench/README.md.
#
# Environment:
#   N=15            measured runs per tool and scenario (tools alternate inside every round)
#   FRESH_N=5       runs of the "fresh account" scenario (0: skip)
#   IDLE=60         seconds of daemon idle time measured
#   TOOLS="ck-issue ck-renew lego certbot uacme"      SCENARIOS="p256 rsa2048 wildcard"
#   CERTKEEPER_BIN, STANDIN_BIN   use these binaries instead of `cargo build --release`
#   PLAN=0          skip the planner's `cargo bench --bench plan`
#   OUT=DIR         also keep raw results (results.csv, daemon.txt, table.md) there
#   KEEP=1          keep the bed's temp dir (logs of every run)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

# uacme (libcurl-gnutls) has no option to trust an extra CA: it reads the system bundle. Rather than switch TLS
# verification off, the whole benchmark runs in a private mount namespace in which the system bundle is replaced
# (bind mount) by the system bundle + the bed's CA. Nothing outside this process tree sees it.
if [[ -z ${BENCH_IN_NS:-} ]] && [[ $(id -u) == 0 ]] && unshare --mount --propagation private true 2>/dev/null; then
	export BENCH_IN_NS=1
	exec unshare --mount --propagation private "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

N=${N:-15}
FRESH_N=${FRESH_N:-5}
IDLE=${IDLE:-60}
TOOLS=${TOOLS:-"ck-issue ck-renew lego certbot uacme"}
SCENARIOS=${SCENARIOS:-"p256 rsa2048 wildcard"}
ZONE=example.test.
EMAIL=bench@example.test

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
command -v lego >/dev/null || need+=(lego)
command -v certbot >/dev/null || need+=(certbot)
[[ -d /usr/lib/python3/dist-packages/certbot_dns_rfc2136 ]] || need+=(python3-certbot-dns-rfc2136)
command -v uacme >/dev/null || need+=(uacme)
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
	log "cargo build --release --workspace --bins"
	(cd "$REPO" && cargo build --release --workspace --bins --quiet)
	target_dir=${CARGO_TARGET_DIR:-$REPO/target}
	CERTKEEPER_BIN=${CERTKEEPER_BIN:-$target_dir/release/certkeeper}
	STANDIN_BIN=${STANDIN_BIN:-$target_dir/release/emqx-standin}
fi
[[ -x $CERTKEEPER_BIN && -x $STANDIN_BIN ]] || die "no certkeeper / emqx-standin binary"

# ---------------------------------------------------------------------------------------------------- planner
PLAN_MS=
if [[ ${PLAN:-1} != 0 ]]; then
	log "planner: cargo bench --bench plan"
	plan_log=$(mktemp)
	(cd "$REPO" && cargo bench --bench plan) >"$plan_log" 2>&1 || die "cargo bench failed: $(tail -5 "$plan_log")"
	# the median of "plan + schedule 1000 deployments", in ms
	PLAN_MS=$(python3 - "$plan_log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"plan \+ schedule 1000 deployments\s+time:\s+\[\S+ \S+ (\S+) (\S+)", text)
print(float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)])
PY
)
	rm -f "$plan_log"
fi

# ---------------------------------------------------------------------------------------------------- the bed
WORK=$(mktemp -d /tmp/certkeeper-bench.XXXXXX)
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

# Pebble's HTTPS listener: a throwaway CA and a localhost leaf.
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
# PEBBLE_AUTHZREUSE=0: never hand out an already valid authorization (every run solves its challenges; run
# names are unique anyway).
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

admin() {
	curl -sS --fail-with-body -X PUT -H 'content-type: application/json' -d "$2" "$API/_admin/$1" >"$WORK/admin.out" ||
		die "stand-in admin PUT $1: $(cat "$WORK/admin.out")"
}
admin keys/app-key '{"secret":"s3cret","deployments":null}'
admin settings '{"pending":0,"get_limit":1000000,"write_limit":1000000}'

if [[ -n ${BENCH_IN_NS:-} ]]; then
	cat /etc/ssl/certs/ca-certificates.crt ca.pem >system-bundle.crt
	mount --bind system-bundle.crt /etc/ssl/certs/ca-certificates.crt
else
	log "not root or no mount namespace: uacme cannot be made to trust the bed's CA; skipping uacme"
	TOOLS=${TOOLS//uacme/}
fi

export LEGO_CA_CERTIFICATES=$WORK/ca.pem REQUESTS_CA_BUNDLE=$WORK/ca.pem
export RFC2136_NAMESERVER=127.0.0.1:$DNS_PORT RFC2136_TSIG_KEY=acme-update. RFC2136_TSIG_SECRET=$TSIG_SECRET
export RFC2136_TSIG_ALGORITHM=hmac-sha256. RFC2136_TTL=60 RFC2136_POLLING_INTERVAL=1 RFC2136_PROPAGATION_TIMEOUT=60
export RFC2136_SEQUENCE_INTERVAL=0
export BENCH_EMAIL=$EMAIL BENCH_DNS_PORT=$DNS_PORT BENCH_TSIG_SECRET=$TSIG_SECRET BENCH_ZONE=$ZONE
cat >certbot-rfc2136.ini <<EOF
dns_rfc2136_server = 127.0.0.1
dns_rfc2136_port = $DNS_PORT
dns_rfc2136_name = acme-update.
dns_rfc2136_secret = $TSIG_SECRET
dns_rfc2136_algorithm = HMAC-SHA256
EOF
chmod 600 certbot-rfc2136.ini
HOOK=$BENCH_DIR/uacme-hook.sh

# ---------------------------------------------------------------------------------------------------- tools
# Every tool gets one command line per (scenario, names); $dir is the run's fresh state directory.
key_args() { # tool scenario
	local rsa=0
	[[ $2 == rsa2048 ]] && rsa=1
	case $1 in
	ck*) ((rsa)) && echo rsa-2048 || echo ecdsa-p256 ;;
	lego) ((rsa)) && echo "--key-type rsa2048" || echo "--key-type ec256" ;;
	certbot) ((rsa)) && echo "--key-type rsa --rsa-key-size 2048" || echo "--key-type ecdsa --elliptic-curve secp256r1" ;;
	uacme) ((rsa)) && echo "-t RSA -b 2048" || echo "-t EC -b 256" ;;
	esac
}

ck_config() { # dir scenario id names...
	local dir=$1 scen=$2 id=$3
	shift 3
	local domains
	domains=$(printf '"%s", ' "$@")
	cat >"$dir/certkeeper.toml" <<EOF
state_dir = "$dir/state"
[acme]
directory = "$DIR_URL"
contact = ["mailto:$EMAIL"]
trust_roots = "$WORK/ca.pem"
key_type = "$(key_args ck "$scen")"
[dns.bed]
provider = "rfc2136"
server = "127.0.0.1:$DNS_PORT"
tsig_key = "acme-update."
tsig_secret_file = "$WORK/tsig.secret"
[emqx.bed]
url = "$API/api/v1"
key = "app-key"
secret_file = "$WORK/emqx.secret"
[schedule]
cron = "0 0 0 1 1 *"
jitter = "0s"
[[deployment]]
id = "$id"
domains = [${domains%, }]
EOF
}

# cmd_for TOOL SCENARIO DIR ID NAMES... : prints nothing, sets CMD (array) and prepares $DIR from the templates.
cmd_for() {
	local tool=$1 scen=$2 dir=$3 id=$4
	shift 4
	local fresh=0 name
	[[ $scen == newacct ]] && fresh=1
	local -a dflags=() ka
	for name in "$@"; do dflags+=(-d "$name"); done
	read -r -a ka <<<"$(key_args "$tool" "$scen")"
	case $tool in
	ck-issue | ck-renew)
		ck_config "$dir" "$scen" "$id" "$@"
		if ((fresh)); then mkdir -m 700 "$dir/state"; else cp -a "$WORK/tpl/ck" "$dir/state"; fi
		if [[ $tool == ck-issue ]]; then
			CMD=("$CERTKEEPER_BIN" --config "$dir/certkeeper.toml" issue --deployment "$id" --out "$dir/bundle.pem")
		else
			admin "deployments/$id" "{\"tlsType\":\"one-way\",\"expire\":\"$(date -u -d '+20 days' '+%Y-%m-%dT%H:%M:%SZ')\",\"status\":\"running\"}"
			CMD=("$CERTKEEPER_BIN" --config "$dir/certkeeper.toml" renew --now --deployment "$id")
		fi
		;;
	lego)
		mkdir -p "$dir/lego"
		((fresh)) || cp -a "$WORK/tpl/lego/accounts" "$dir/lego/"
		CMD=(lego --path "$dir/lego" --server "$DIR_URL" --accept-tos --email "$EMAIL" "${ka[@]}"
			--dns rfc2136 --dns.resolvers "127.0.0.1:$DNS_PORT" --dns.disable-cp "${dflags[@]}" run)
		;;
	certbot)
		if ((fresh)); then mkdir -p "$dir/certbot/config"; else cp -a "$WORK/tpl/certbot" "$dir/certbot"; fi
		CMD=(certbot certonly --non-interactive --agree-tos --email "$EMAIL" --no-eff-email --server "$DIR_URL"
			--config-dir "$dir/certbot/config" --work-dir "$dir/certbot/work" --logs-dir "$dir/certbot/logs"
			"${ka[@]}" --dns-rfc2136 --dns-rfc2136-credentials "$WORK/certbot-rfc2136.ini"
			--dns-rfc2136-propagation-seconds 0 "${dflags[@]}")
		;;
	uacme)
		if ((fresh)); then
			mkdir -p "$dir/uacme"
			# shellcheck disable=SC2016 # $@ and $1 are for sh
			CMD=(sh -c 'n=$1; shift; uacme -a "$@" new "$BENCH_EMAIL" >/dev/null && exec uacme -a "$@" issue "$n"'
				uacme "$1" "$DIR_URL" -c "$dir/uacme" -y -o "${ka[@]}" -h "$HOOK")
		else
			cp -a "$WORK/tpl/uacme" "$dir/uacme"
			CMD=(uacme -a "$DIR_URL" -c "$dir/uacme" -y -o "${ka[@]}" -h "$HOOK" issue "$@")
		fi
		;;
	*) die "unknown tool $tool" ;;
	esac
}

acme_requests() { grep -c -- '-> calling handler()' "$WORK/pebble.log" || true; }

# vendor_requests ID: "GETS PUTS_AND_POSTS" for one deployment, from the stand-in's request log.
vendor_requests() {
	curl -sf "$API/_admin/log" | python3 -c '
import json, sys
log = [e for e in json.load(sys.stdin) if "/deployments/" + sys.argv[1] + "/" in e["path"]]
print(sum(e["method"] == "GET" for e in log), sum(e["method"] in ("PUT", "POST") for e in log))' "$1"
}

RESULTS=$WORK/results.csv
echo "tool,scenario,run,ok,wall_ms,rss_kb,acme_requests,api_gets,api_writes" >"$RESULTS"

# measure TOOL SCENARIO RUN [record]
measure() {
	local tool=$1 scen=$2 run=$3 record=${4:-record}
	local tag id dir names before after t0 t1 ok=1 rss gets=- writes=-
	tag=$(printf '%s-%s-%s' "${tool//ck-/ck}" "${scen:0:4}" "$run")
	id=$tag
	dir=$WORK/runs/$tag
	mkdir -p "$dir"
	names=("$tag.example.test")
	[[ $scen == wildcard ]] && names+=("*.$tag.example.test")
	local -a CMD
	cmd_for "$tool" "$scen" "$dir" "$id" "${names[@]}"
	before=$(acme_requests)
	t0=$(date +%s%N)
	/usr/bin/time -v -o "$dir/time.txt" "${CMD[@]}" >"$dir/stdout" 2>"$dir/stderr" </dev/null || ok=0
	t1=$(date +%s%N)
	after=$(acme_requests)
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time.txt")
	if ((ok == 0)); then
		printf 'FAILED: %s %s run %s:\n' "$tool" "$scen" "$run" >&2
		tail -5 "$dir/stderr" >&2
	fi
	if [[ $tool == ck-renew ]]; then read -r gets writes < <(vendor_requests "$id"); fi
	[[ $record == record ]] &&
		echo "$tool,$scen,$run,$ok,$(((t1 - t0) / 1000000)),${rss:-0},$((after - before)),$gets,$writes" >>"$RESULTS"
	return 0
}

# ---------------------------------------------------------------------------------------------------- accounts
# One ACME account per tool, created by the tool itself before the measured runs; every measured run starts
# from a fresh state directory holding only that account (no certificate, no other state).
log "creating one ACME account per tool (not measured)"
mkdir -p tpl runs
tpl_dir=$WORK/runs/tpl
mkdir -p "$tpl_dir"
ck_config "$tpl_dir" p256 tpl tpl.example.test
mkdir -m 700 "$tpl_dir/state"
"$CERTKEEPER_BIN" --config "$tpl_dir/certkeeper.toml" issue --deployment tpl --out "$tpl_dir/b.pem" 2>"$tpl_dir/ck.err" ||
	die "certkeeper issue failed: $(tail -3 "$tpl_dir/ck.err")"
mkdir -m 700 tpl/ck
cp -a "$tpl_dir/state/account.json" tpl/ck/
lego --path "$WORK/tpl/lego" --server "$DIR_URL" --accept-tos --email "$EMAIL" --dns rfc2136 \
	--dns.resolvers "127.0.0.1:$DNS_PORT" --dns.disable-cp -d tpl-lego.example.test run >"$tpl_dir/lego.log" 2>&1 ||
	die "lego failed: $(tail -3 "$tpl_dir/lego.log")"
rm -rf tpl/lego/certificates
certbot register --non-interactive --agree-tos --email "$EMAIL" --no-eff-email --server "$DIR_URL" \
	--config-dir tpl/certbot/config --work-dir tpl/certbot/work --logs-dir tpl/certbot/logs \
	>"$tpl_dir/certbot.log" 2>&1 || die "certbot register failed: $(tail -3 "$tpl_dir/certbot.log")"
if [[ $TOOLS == *uacme* ]]; then
	uacme -a "$DIR_URL" -c tpl/uacme -y new "$EMAIL" >"$tpl_dir/uacme.log" 2>&1 ||
		die "uacme new failed: $(tail -3 "$tpl_dir/uacme.log")"
fi
# One unrecorded issuance per tool and scenario warms caches (page cache of certbot's Python, Pebble's JIT-free
# but lazily built state) so that run 1 is not an outlier.
for scen in $SCENARIOS; do
	for tool in $TOOLS; do measure "$tool" "$scen" 0 warmup; done
done

# ---------------------------------------------------------------------------------------------------- races
read -r -a tool_list <<<"$TOOLS"
ntools=${#tool_list[@]}
started=$(date +%s)
for ((i = 1; i <= N; i++)); do
	log "round $i/$N ($(($(date +%s) - started)) s so far)"
	for scen in $SCENARIOS; do
		for ((k = 0; k < ntools; k++)); do # rotate the order every round
			measure "${tool_list[$(((k + i) % ntools))]}" "$scen" "$i"
		done
	done
done
for ((i = 1; i <= FRESH_N; i++)); do
	log "fresh-account round $i/$FRESH_N"
	for ((k = 0; k < ntools; k++)); do
		tool=${tool_list[$(((k + i) % ntools))]}
		[[ $tool == ck-renew ]] || measure "$tool" newacct "$i"
	done
done

# ---------------------------------------------------------------------------------------------------- daemon
DAEMON=$WORK/daemon.txt
if ((IDLE > 0)); then
	log "daemon: 10 deployments, yearly cron, ${IDLE}s idle"
	ddir=$WORK/runs/daemon
	mkdir -p "$ddir"
	ck_config "$ddir" p256 dm0 dm0.example.test
	for k in 1 2 3 4 5 6 7 8 9; do
		printf '[[deployment]]\nid = "dm%s"\ndomains = ["dm%s.example.test"]\n' "$k" "$k" >>"$ddir/certkeeper.toml"
	done
	cp -a "$WORK/tpl/ck" "$ddir/state"
	"$CERTKEEPER_BIN" --config "$ddir/certkeeper.toml" run 2>"$ddir/stderr" &
	dpid=$!
	PIDS+=("$dpid")
	for _ in $(seq 100); do
		grep -q 'sleeping until the next pass' "$ddir/stderr" && break
		sleep 0.05
	done
	grep -q 'sleeping until the next pass' "$ddir/stderr" || die "daemon did not start: $(tail -3 "$ddir/stderr")"
	# snapshot: "rss_kb hwm_kb threads voluntary involuntary cpu_ns", context switches and CPU time (schedstat:
	# nanoseconds on a CPU) summed over all threads
	snapshot() {
		local vol=0 inv=0 ns=0 t
		for t in /proc/"$dpid"/task/*; do
			vol=$((vol + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")))
			inv=$((inv + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")))
			ns=$((ns + $(awk '{print $1}' "$t/schedstat")))
		done
		echo "$(awk '/^VmRSS/ {print $2}' /proc/"$dpid"/status) $(awk '/^VmHWM/ {print $2}' /proc/"$dpid"/status)" \
			"$(awk '/^Threads/ {print $2}' /proc/"$dpid"/status) $vol $inv $ns"
	}
	read -r rss0 _ threads0 vol0 inv0 cpu0 < <(snapshot)
	sleep "$IDLE"
	read -r rss1 hwm1 threads1 vol1 inv1 cpu1 < <(snapshot)
	kill -TERM "$dpid"
	wait "$dpid" || true
	{
		echo "daemon_idle_seconds $IDLE"
		echo "daemon_rss_kb_start $rss0"
		echo "daemon_rss_kb_end $rss1"
		echo "daemon_hwm_kb $hwm1"
		echo "daemon_threads $threads0 $threads1"
		echo "daemon_cpu_us_total $((cpu1 / 1000))"
		echo "daemon_cpu_us_idle $(((cpu1 - cpu0) / 1000))"
		echo "daemon_ctxsw_voluntary_idle $((vol1 - vol0))"
		echo "daemon_ctxsw_involuntary_idle $((inv1 - inv0))"
		echo "daemon_vendor_requests $(curl -sf "$API/_admin/log" | grep -o '/deployments/dm' | wc -l)"
	} >"$DAEMON"
else
	: >"$DAEMON"
fi

# ---------------------------------------------------------------------------------------------------- report
log "report"
python3 "$BENCH_DIR/report.py" "$RESULTS" "$DAEMON" "$PLAN_MS" | tee "$WORK/table.md"
if [[ -n ${OUT:-} ]]; then
	mkdir -p "$OUT"
	cp "$RESULTS" "$DAEMON" "$WORK/table.md" "$OUT/"
	echo "raw results in $OUT" >&2
fi
