#!/usr/bin/env python3
"""Write results.md and results.json for a bench/suite run directory.

Reads DIR/runs.tsv (scenario, exit code, flags) and DIR/<scenario>/summary.json (schema
roost-loadtest/1), compares each scenario's key numbers with the product brief's performance
targets, and records the machine. Standard library only.
"""

import json
import sys
from pathlib import Path

# scenario -> [(label, metric, op, target, scale_free)]
# scale_free: the target can be judged on a --quick run (a latency or a per-connection cost);
# throughput targets need the full offered load.
TARGETS = {
    "fanout-100": [
        ("deliveries/s >= 400,000", "delivered_per_sec", ">=", 400_000, False),
        ("p99 send->deliver <= 50 ms", "p99_deliver_ms", "<=", 50, True),
    ],
    "direct": [
        ("msgs/s >= 20,000", "sent_per_sec", ">=", 20_000, False),
        ("p99 send->deliver <= 10 ms", "p99_deliver_ms", "<=", 10, True),
    ],
    "idle": [
        ("RSS/connection <= 16 KiB", "rss_bytes_per_connection", "<=", 16 * 1024, True),
    ],
    "connect": [
        ("connect+auth >= 5,000/s", "connects_per_sec", ">=", 5_000, False),
    ],
}


def metric(summary, name):
    r = summary["results"]
    if name in ("sent_per_sec", "acked_per_sec", "delivered_per_sec", "connects_per_sec"):
        return r.get(name)
    if name == "rss_bytes_per_connection":
        return r.get("server", {}).get("rss_bytes_per_connection")
    if name.endswith("_ms"):
        stat, kind = name[: -len("_ms")].split("_", 1)
        lat = r["latency_ms"].get(kind)
        return None if lat is None else lat.get(f"{stat}_ms")
    return None


def judge(value, op, target):
    if value is None:
        return "no data"
    ok = value >= target if op == ">=" else value <= target
    return "pass" if ok else "miss"


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def main():
    out = Path(sys.argv[1])
    quick = len(sys.argv) > 3 and sys.argv[3] == "1"
    rows, environment = [], None
    for line in (out / "runs.tsv").read_text().splitlines():
        name, code, flags = line.split("\t")
        path = out / name / "summary.json"
        row = {"scenario": name, "exit_code": int(code), "flags": flags, "targets": []}
        if path.exists():
            s = json.loads(path.read_text())
            environment = environment or s["environment"]
            r, c = s["results"], s["results"]["correctness"]
            row.update(
                connections=s["setup"]["connected"],
                connects_per_sec=r["connects_per_sec"],
                sent_per_sec=r["sent_per_sec"],
                delivered_per_sec=r["delivered_per_sec"],
                p50_ack_ms=metric(s, "p50_ack_ms"),
                p99_ack_ms=metric(s, "p99_ack_ms"),
                p50_deliver_ms=metric(s, "p50_deliver_ms"),
                p99_deliver_ms=metric(s, "p99_deliver_ms"),
                p99_connect_ms=metric(s, "p99_connect_ms"),
                errors=r["errors"],
                violations=s["outcome"]["correctness_violations"],
                server=r.get("server", {}),
            )
            for label, name_, op, target, scale_free in TARGETS.get(name, []):
                value = metric(s, name_)
                verdict = judge(value, op, target) if (scale_free or not quick) else "n/a (quick)"
                row["targets"].append({"target": label, "metric": name_, "value": value, "result": verdict})
        rows.append(row)

    result = {"schema": "roost-bench/1", "quick": quick, "environment": environment, "scenarios": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")

    md = [f"# Roost bench suite{' (quick)' if quick else ''}", ""]
    if environment:
        md += [
            f"Machine: {environment.get('cpu_model')}, {environment.get('logical_cores')} logical cores, "
            f"{(environment.get('memory_total_bytes') or 0) / 2**30:.1f} GiB, kernel {environment.get('kernel')}, "
            f"{environment.get('os')}; open files {environment.get('open_files_limit')}. "
            "Server and load generator share the machine.",
            "",
        ]
    if quick:
        md += ["Quick run: reduced counts and durations; throughput targets are not judged.", ""]
    md += [
        "| scenario | conns | connects/s | sent/s | delivered/s | ack p50/p99 ms | deliver p50/p99 ms | "
        "server RSS/conn | errors | violations | brief target | result | exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "connections" not in r:
            md.append(f"| {r['scenario']} | – | – | – | – | – | – | – | – | – | – | failed to run | {r['exit_code']} |")
            continue
        # RSS per connection only means something where connections are all the load.
        rss = r["server"].get("rss_bytes_per_connection") if r["scenario"] == "idle" else None
        targets = "<br>".join(t["target"] for t in r["targets"]) or "–"
        results = "<br>".join(f"{t['result']} ({fmt(t['value'])})" for t in r["targets"]) or "–"
        md.append(
            f"| {r['scenario']} | {r['connections']} | {fmt(r['connects_per_sec'], 0)} | {fmt(r['sent_per_sec'], 0)} "
            f"| {fmt(r['delivered_per_sec'], 0)} | {fmt(r['p50_ack_ms'], 2)} / {fmt(r['p99_ack_ms'], 2)} "
            f"| {fmt(r['p50_deliver_ms'], 2)} / {fmt(r['p99_deliver_ms'], 2)} "
            f"| {fmt(rss / 1024) + ' KiB' if rss is not None else '–'} | {r['errors']} | {r['violations']} "
            f"| {targets} | {results} | {r['exit_code']} |"
        )
    md += [
        "",
        "Exit codes: 0 pass, 98 correctness violation, 99 a threshold breached (the scenario's, or the "
        "suite's --fail-if), 1 the run failed. Violations: lost + duplicated + reordered + gaps + "
        "undelivered + ack mismatches (see loadtest/README.md).",
        "Latencies are measured from each message's planned send time (open loop).",
        "",
        "Runs (scenario file and flags):",
        "",
    ]
    md += [f"- {r['scenario']}: `{r['flags']}`" for r in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
