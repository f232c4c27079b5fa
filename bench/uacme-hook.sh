#!/bin/sh
# uacme challenge hook for the benchmark bed: DNS-01 only, RFC 2136 + TSIG with knsupdate, then waits until the
# zone's primary answers the value (kdig, 20 ms polls) before uacme tells the CA to validate — the same check
# certkeeper makes. Arguments (uacme(1)): METHOD TYPE IDENT TOKEN AUTH; AUTH is already the TXT value for dns-01.
# Environment: BENCH_DNS_PORT, BENCH_TSIG_SECRET, BENCH_ZONE (set by bench/run.sh).
set -eu
method=$1 type=$2 ident=$3 auth=$5
[ "$type" = dns-01 ] || exit 1
owner="_acme-challenge.${ident#\*.}."
case $method in
begin) op=add ;;
done | failed) op=delete ;;
*) exit 1 ;;
esac
knsupdate <<EOF
server 127.0.0.1 $BENCH_DNS_PORT
key hmac-sha256:acme-update. $BENCH_TSIG_SECRET
zone $BENCH_ZONE
update $op $owner 60 TXT "$auth"
send
EOF
[ "$op" = add ] || exit 0
i=0
until kdig @127.0.0.1 -p "$BENCH_DNS_PORT" +short +norec TXT "$owner" | grep -qF "\"$auth\""; do
	i=$((i + 1))
	[ "$i" -lt 500 ] || exit 1
	sleep 0.02
done
