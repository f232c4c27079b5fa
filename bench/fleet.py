#!/usr/bin/env python3
"""Helper of bench/fleet.sh: builds a scenario (stand-in keys + deployments, certkeeper config), reads what
happened (stand-in request log, certkeeper's stderr, /usr/bin/time -v), and prints the table.

Kept in Python because the analysis needs sliding windows over timestamps and 1,000-deployment setups would
take one curl process per request from bash.

  fleet.py setup NAME DEPLOYMENTS KEYS DUE CONCURRENCY DIR    (bed from the BED_* environment)
  fleet.py measure NAME DIR T0_NS T1_NS EXIT >> results.jsonl
  fleet.py table results.jsonl
"""

import json
import os
import re
import statistics
import sys
import urllib.request
from collections import defaultdict
from datetime import datetime, timedelta, timezone

ENV = os.environ


def admin(path, body):
    req = urllib.request.Request(ENV["BED_API"] + "/_admin/" + path, data=json.dumps(body).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        r.read()


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def setup(name, n, keys, due, conc, d):
    n, keys, due, conc = int(n), int(keys), int(due), int(conc)
    now = datetime.now(timezone.utc)
    for k in range(keys):
        # `deployments: null`: the key may use every deployment; the budget, not access, is under test.
        admin(f"keys/{name}-k{k:02}", {"secret": "s3cret", "deployments": None})
    lines = [f'state_dir = "{d}/state"', "[acme]", f'directory = "{ENV["BED_DIR_URL"]}"',
             'contact = ["mailto:bench@example.test"]', f'trust_roots = "{ENV["BED_CA"]}"',
             "[dns.bed]", 'provider = "rfc2136"', f'server = "127.0.0.1:{ENV["BED_DNS_PORT"]}"',
             'tsig_key = "acme-update."', f'tsig_secret_file = "{ENV["BED_TSIG"]}"',
             "[schedule]", 'cron = "0 0 0 1 1 *"', 'jitter = "0s"', f"concurrency = {conc}"]
    # Limits and window are left at certkeeper's defaults on purpose: they must match the vendor's.
    for k in range(keys):
        lines += [f"[emqx.k{k:02}]", f'url = "{ENV["BED_API"]}/api/v1"', f'key = "{name}-k{k:02}"',
                  f'secret_file = "{ENV["BED_SECRET"]}"', f'poll_interval = "{ENV["POLL"]}"']
        if ENV.get("WAIT_TIMEOUT"):
            lines.append(f'wait_timeout = "{ENV["WAIT_TIMEOUT"]}"')
    # Deployment i belongs to key i % keys, so the first `due` deployments spread evenly over the keys.
    for i in range(n):
        dep = f"{name}-{i:04}"
        left = timedelta(days=10 if i < due else 80)
        # STAGGER (a diagnostic): expiries one second apart, so deadlines alternate between the keys.
        left += timedelta(seconds=i if ENV.get("STAGGER") else 0)
        admin(f"deployments/{dep}", {"tlsType": "one-way", "status": "running", "expire": rfc3339(now + left)})
        lines += ["[[deployment]]", f'id = "{dep}"', f'domains = ["{dep}.example.test"]', f'emqx = "k{i % keys:02}"']
    with open(f"{d}/certkeeper.toml", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(f"{d}/scenario.json", "w") as f:
        json.dump({"name": name, "deployments": n, "keys": keys, "due": due, "concurrency": conc,
                   "load_start": open("/proc/loadavg").read().split()[0]}, f)


def parse_time(s):
    # Both the stand-in and tracing write RFC 3339 UTC with up to 9 fractional digits; Python reads 6.
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", s)
    t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return t + timedelta(microseconds=int((m.group(2) or "0")[:6].ljust(6, "0")))


def max_in_window(times, window):
    """The most requests inside any sliding window, as the vendor counts them."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def measure(name, d, t0_ns, t1_ns, code):
    sc = json.load(open(f"{d}/scenario.json"))
    t0 = datetime.fromtimestamp(int(t0_ns) / 1e9, timezone.utc)
    mine = re.compile(rf"/api/v1/deployments/{re.escape(name)}-\d{{4}}/tls")
    log = [e for e in json.load(open(f"{d}/standin-log.json")) if mine.fullmatch(e["path"])]
    window = timedelta(seconds=3600)
    per_key = defaultdict(lambda: {"GET": [], "W": []})
    writes_per_dep = defaultdict(int)
    # Per deployment: when its first accepted write arrived, and the last GET (the one that saw `running`).
    pushed_at, last_get = {}, {}
    for e in log:
        if e["status"] == 429:
            continue
        cls = "GET" if e["method"] == "GET" else "W"
        per_key[e["key"]][cls].append(parse_time(e["at"]))
        dep = e["path"].split("/")[4]
        if cls == "W" and e["status"] == 200:
            writes_per_dep[dep] += 1
            pushed_at.setdefault(dep, parse_time(e["at"]))
        if cls == "GET":
            last_get[dep] = parse_time(e["at"])
    keys = [f"{name}-k{k:02}" for k in range(sc["keys"])]
    gets = [len(per_key[k]["GET"]) for k in keys]
    writes = [len(per_key[k]["W"]) for k in keys]
    due_ids = {f"{name}-{i:04}" for i in range(sc["due"])}
    stderr = open(f"{d}/stderr").read().splitlines()
    stamp = lambda line: parse_time(line.split()[0])  # noqa: E731
    first_due = next((stamp(l) for l in stderr if "renewal due; ordering a certificate" in l), None)
    waits = sorted((last_get[i] - pushed_at[i]).total_seconds() for i in pushed_at if i in last_get)
    first_get = min((parse_time(e["at"]) for e in log), default=None)
    first_write = min((parse_time(e["at"]) for e in log if e["method"] != "GET"), default=None)
    rusage = dict(l.strip().split(": ", 1) for l in open(f"{d}/time.txt") if ": " in l)
    secs = lambda t: None if t is None else round((t - t0).total_seconds(), 3)  # noqa: E731
    r = dict(sc, exit=int(code), wall_s=round((int(t1_ns) - int(t0_ns)) / 1e9, 3),
             plan_s=secs(first_due), first_get_s=secs(first_get), first_write_s=secs(first_write),
             wait_median_s=round(statistics.median(waits), 1) if waits else None,
             wait_max_s=round(max(waits), 1) if waits else None,
             renewed=sum(1 for i in due_ids if writes_per_dep[i] >= 1),
             pushed_twice=sorted(i for i, w in writes_per_dep.items() if w > 1),
             pushed_not_due=sorted(i for i in writes_per_dep if i not in due_ids),
             r429=sum(1 for e in log if e["status"] == 429),
             other_errors=sum(1 for e in log if e["status"] >= 400 and e["status"] != 429),
             gets_max=max(gets), gets_mean=round(statistics.mean(gets), 1),
             gets_window_max=max(max_in_window(per_key[k]["GET"], window) for k in keys),
             writes_max=max(writes), writes_mean=round(statistics.mean(writes), 2),
             writes_window_max=max(max_in_window(per_key[k]["W"], window) for k in keys),
             rss_mb=round(int(rusage["Maximum resident set size (kbytes)"]) / 1024, 1),
             cpu_s=round(float(rusage["User time (seconds)"]) + float(rusage["System time (seconds)"]), 2),
             # Pebble signs ECDSA leaves with an RSA intermediate: that warning comes with every issuance.
             warn_lines=sum(1 for l in stderr if " WARN " in l and "issuer's is RSA" not in l),
             error_lines=sum(1 for l in stderr if " ERROR " in l),
             stdout_renewed=sum(1 for l in open(f"{d}/stdout") if ": renewed:" in l),
             stdout_lines=len(open(f"{d}/stdout").read().splitlines()),
             load_end=open("/proc/loadavg").read().split()[0])
    print(json.dumps(r))


def table(path):
    rows = [json.loads(l) for l in open(path)]
    solo = [r["wall_s"] for r in rows if r["name"].startswith("solo")]
    base = statistics.mean(solo) if solo else None
    print("| scenario | deployments / keys / due | concurrency | exit | renewed | wall s | ratio to solo | plan s "
          "| push → running seen, s median / max | 429s | GETs per key max / mean | writes per key max / mean "
          "| peak RSS MB | CPU s | load 1-min start / end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['wall_s'] / base:.2f}" if base and not r["name"].startswith("solo") else "—"
        print(f"| {r['name']} | {r['deployments']} / {r['keys']} / {r['due']} | {r['concurrency']} | {r['exit']} "
              f"| {r['renewed']}/{r['due']} | {r['wall_s']:.1f} | {ratio} | {r['plan_s']} "
              f"| {r['wait_median_s']} / {r['wait_max_s']} | {r['r429']} "
              f"| {r['gets_max']} / {r['gets_mean']} | {r['writes_max']} / {r['writes_mean']} | {r['rss_mb']} "
              f"| {r['cpu_s']} | {r.get('load_start')} / {r['load_end']} |")
    print()
    for r in rows:
        odd = {k: r[k] for k in ("pushed_twice", "pushed_not_due", "other_errors", "warn_lines", "error_lines")
               if r[k]}
        if odd or r["gets_window_max"] > 60 or r["writes_window_max"] > 6:
            print(f"- {r['name']}: {odd} (max per key in any hour: {r['gets_window_max']} GETs, "
                  f"{r['writes_window_max']} writes)")
    print(f"\nratio: wall s / mean of the solo runs {solo}. Seconds from exec to the first vendor GET / first "
          "write: " + ", ".join(f"{r['name']} {r['first_get_s']} / {r['first_write_s']}" for r in rows))


if __name__ == "__main__":
    {"setup": setup, "measure": measure, "table": table}[sys.argv[1]](*sys.argv[2:])
