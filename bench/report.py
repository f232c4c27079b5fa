#!/usr/bin/env python3
"""Turns bench/run.sh's results.csv (+ daemon.txt, + the planner's time) into the markdown table and the targets."""

import csv
import statistics
import sys
from collections import defaultdict

results, daemon_file = sys.argv[1], sys.argv[2]
plan_ms = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None

TOOLS = ["ck-issue", "ck-renew", "uacme", "lego", "certbot"]
LABEL = {
    "ck-issue": "certkeeper issue",
    "ck-renew": "certkeeper renew --now (full)",
    "uacme": "uacme 1.7.4",
    "lego": "lego 4.9.1",
    "certbot": "certbot 2.1.0",
}
SCEN = {
    "p256": "1 name, P-256",
    "rsa2048": "1 name, RSA-2048",
    "wildcard": "2 names (apex + wildcard), P-256",
    "newacct": "1 name, P-256, new account",
}

rows = defaultdict(list)
failed = defaultdict(int)
with open(results) as f:
    for r in csv.DictReader(f):
        key = (r["scenario"], r["tool"])
        if r["ok"] == "1":
            rows[key].append(r)
        else:
            failed[key] += 1


def col(key, field, scale=1.0):
    return [float(r[field]) / scale for r in rows[key] if r[field] not in ("", "-")]


def fmt(values, digits):
    if not values:
        return "—"
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def med(key, field, scale=1.0):
    v = col(key, field, scale)
    return statistics.median(v) if v else None


print("| scenario | tool | runs ok | wall s, median (min–max) | peak RSS MB | ACME requests | vendor API GET/PUT |")
print("|---|---|---|---|---|---|---|")
for scen in SCEN:
    for tool in TOOLS:
        key = (scen, tool)
        if not rows[key] and not failed[key]:
            continue
        ok = f"{len(rows[key])}/{len(rows[key]) + failed[key]}"
        api = "—"
        if tool == "ck-renew" and rows[key]:
            api = f"{med(key, 'api_gets'):.0f} / {med(key, 'api_writes'):.0f}"
        print(
            f"| {SCEN[scen]} | {LABEL[tool]} | {ok} | {fmt(col(key, 'wall_ms', 1000), 3)} "
            f"| {fmt(col(key, 'rss_kb', 1024), 1)} | {fmt(col(key, 'acme_requests'), 0)} | {api} |"
        )

daemon = {}
with open(daemon_file) as f:
    for line in f:
        k, *v = line.split()
        daemon[k] = v
if daemon:
    print()
    print(
        f"Daemon (`certkeeper run`, 10 deployments, yearly cron) after {daemon['daemon_idle_seconds'][0]} s idle: "
        f"RSS {int(daemon['daemon_rss_kb_end'][0]) / 1024:.1f} MB (peak {int(daemon['daemon_hwm_kb'][0]) / 1024:.1f} MB), "
        f"{daemon['daemon_threads'][1]} thread(s), CPU time {int(daemon['daemon_cpu_us_total'][0]) / 1000:.1f} ms since start "
        f"({int(daemon['daemon_cpu_us_idle'][0]) / 1000:.3f} ms while idle), context switches while idle: "
        f"{daemon['daemon_ctxsw_voluntary_idle'][0]} voluntary + {daemon['daemon_ctxsw_involuntary_idle'][0]} involuntary, "
        f"vendor API requests while idle: {daemon['daemon_vendor_requests'][0]}."
    )
if plan_ms is not None:
    print()
    print(f"Planner: 1,000 deployments planned in {plan_ms:.3f} ms (criterion, `cargo bench --bench plan`).")

# ---------------------------------------------------------------------------------------------- targets
print()
print("| target | measured | |")
print("|---|---|---|")


def verdict(ok):
    return "met" if ok else "**missed**"


for scen in ("p256", "rsa2048", "wildcard"):
    ck = med((scen, "ck-issue"), "wall_ms")
    for peer, factor in (("uacme", 0.8), ("lego", 0.3)):
        other = med((scen, peer), "wall_ms")
        if ck is None or other is None:
            continue
        print(
            f"| issuance median ≤ {factor}× {peer} ({SCEN[scen]}) | {ck / 1000:.3f} s vs {other / 1000:.3f} s "
            f"= {ck / other:.2f}× | {verdict(ck <= factor * other)} |"
        )
rss = [(med((s, t), "rss_kb"), s, t) for s in SCEN for t in ("ck-issue", "ck-renew") if rows[(s, t)]]
if rss:
    worst = max(rss)
    print(
        f"| peak RSS ≤ 12 MB | worst median {worst[0] / 1024:.1f} MB ({LABEL[worst[2]]}, {SCEN[worst[1]]}) "
        f"| {verdict(worst[0] <= 12 * 1024)} |"
    )
reqs = [max(col((s, t), "acme_requests")) for s in ("p256", "rsa2048") for t in ("ck-issue", "ck-renew") if rows[(s, t)]]
if reqs:
    print(f"| ≤ 9 ACME requests, one name, existing account | max {max(reqs):.0f} | {verdict(max(reqs) <= 9)} |")
if daemon:
    rss_mb = int(daemon["daemon_rss_kb_end"][0]) / 1024
    wakeups = int(daemon["daemon_ctxsw_voluntary_idle"][0]) + int(daemon["daemon_ctxsw_involuntary_idle"][0])
    print(f"| daemon idle RSS ≤ 10 MB | {rss_mb:.1f} MB | {verdict(rss_mb <= 10)} |")
    print(f"| no wake-ups between ticks | {wakeups} context switches in {daemon['daemon_idle_seconds'][0]} s | {verdict(wakeups == 0)} |")
if plan_ms is not None:
    print(f"| plan of 1,000 deployments < 50 ms | {plan_ms:.3f} ms | {verdict(plan_ms < 50)} |")
