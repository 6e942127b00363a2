"""Runs the peer tools and force-returns on one file, measured the same way, and prints one table.

Each tool runs in a fresh process under GNU time (`/usr/bin/time -v`): wall time of the whole
process, CPU time, peak RSS, and the CPU other processes burnt meanwhile (from /proc/stat).
force-returns runs twice: `validate --schema` (decode + JSON Schema checks, no outputs) and
`run --once` over a local bucket holding the file (archive + checks + Parquet snapshot + reports
+ quality tables), with the peers' own row schema as the pipeline's schema.
Called by tests/bench/peers.sh; see BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--tools", default="pyarrow,polars,duckdb")
    ap.add_argument("--max-load", type=float, default=0.8)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.peers))
    import run_bench  # the peers' own measuring helpers, so every tool is measured alike

    csv = os.path.abspath(a.csv)
    truth = json.load(open(csv + ".truth.json"))
    rows = truth["rows"]
    stem = os.path.splitext(os.path.basename(csv))[0]
    results_dir = os.path.abspath(os.path.join(a.work, "results"))

    # 1. The peers, through their own runner.
    peer_out = os.path.join(results_dir, f"{stem}_peers")
    subprocess.run([sys.executable, os.path.join(a.peers, "run_bench.py"), csv, "--tools", a.tools,
                    "--repeat", str(a.repeat), "--max-load", str(a.max_load), "--out", peer_out],
                   check=True)
    peers = json.load(open(peer_out + ".json"))["results"]

    # 2. force-returns, measured the same way.
    schema = os.path.join(os.path.abspath(a.peers), "schemas", "row.schema.json")
    project = make_project(os.path.abspath(a.work), schema)
    binary = os.path.abspath(a.binary)
    ours = []
    for rep in range(a.repeat):
        ours.append(measure(run_bench, "force-returns validate --schema", rep, a.max_load,
                            [binary, "validate", csv, "--schema", schema, "--format", "json"], rows,
                            flagged=lambda out: json.loads(out)["flagged_rows"]))
    bucket = os.path.join(os.path.abspath(a.work), "bucket")
    for rep in range(a.repeat):
        shutil.rmtree(bucket, ignore_errors=True)
        folder = os.path.join(bucket, "incoming", "durham", "peer_bench", "2023-05")
        os.makedirs(folder)
        os.link(csv, os.path.join(folder, os.path.basename(csv)))
        ours.append(measure(run_bench, "force-returns run --once", rep, a.max_load,
                            [binary, "--project", project, "--log-format", "json", "run", "--once",
                             "--bucket", bucket], rows,
                            flagged=lambda _out: flagged_in_bucket(bucket)))

    # 3. One table.
    table = []
    for r in peers:
        if "error" in r:
            continue
        table.append({"tool": f"{r['tool']} {r.get('version', '')}".strip(), "wall_s": r["wall_s"],
                      "cpu_s": r["cpu_s"], "other_cpu_s": r["other_cpu_s"], "rss_mb": r["peak_rss_mb"],
                      "flagged": r.get("invalid_rows")})
    table.extend(ours)
    best = {}
    for r in table:
        k = r["tool"]
        if k not in best or r["wall_s"] < best[k]["wall_s"]:
            best[k] = dict(r, rss_mb=max(x["rss_mb"] for x in table if x["tool"] == k))
    ref = best["force-returns validate --schema"]["wall_s"]
    lines = [
        f"File: {csv} ({rows:,} rows, {truth['file_bytes'] / 1e6:.0f} MB); ground truth: "
        f"{truth['rows_flagged_if_dup_groups_count_both']:,} flagged rows (both members of a duplicate pair).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {mem_gb():.0f} GiB; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; best of {a.repeat} (wall), max over runs (RSS).",
        "",
        "| tool | wall s | rows/s | CPU s | other procs' CPU s | peak RSS MB | flagged rows | wall ÷ force-returns validate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in sorted(best.items(), key=lambda kv: kv[1]["wall_s"]):
        lines.append(f"| {k} | {r['wall_s']:.2f} | {rows / r['wall_s'] / 1e6:.2f} M | {r['cpu_s']:.2f} | "
                     f"{r['other_cpu_s']:.2f} | {r['rss_mb']:.0f} | "
                     f"{'-' if r['flagged'] is None else format(r['flagged'], ',')} | {r['wall_s'] / ref:.2f} |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(results_dir, f"{stem}_side_by_side.md"), "w").write(text)
    json.dump({"truth": truth, "runs": table}, open(os.path.join(results_dir, f"{stem}_side_by_side.json"), "w"),
              indent=2)
    print()
    print(text)


def measure(run_bench, tool, rep, max_load, cmd, rows, flagged):
    load = run_bench.wait_idle(max_load, 300)
    busy0 = run_bench.cpu_busy_s()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    busy1 = run_bench.cpu_busy_s()
    wall, rss, cpu = run_bench.parse_time_v(p.stderr)
    if wall is None:
        raise SystemExit(f"{tool} failed: {p.stderr[-2000:]}")
    n = flagged(p.stdout)
    print(f"{tool:34s} rep{rep} wall={wall:.2f}s rss={rss:.0f}MB cpu={cpu:.2f}s "
          f"other_cpu={max(0.0, busy1 - busy0 - cpu):.2f}s load={load:.2f} flagged={n} rc={p.returncode}",
          flush=True)
    return {"tool": tool, "wall_s": wall, "cpu_s": cpu, "other_cpu_s": round(max(0.0, busy1 - busy0 - cpu), 2),
            "rss_mb": rss, "flagged": n, "rows_per_s": rows / wall}


def flagged_in_bucket(bucket):
    """Rows with an error, from the run's own quality table (read back with pyarrow)."""
    import glob

    import pyarrow.parquet as pq
    files = glob.glob(os.path.join(bucket, "quality", "submissions", "*", "*.parquet"))
    return int(sum(pq.ParquetFile(f).read().column("error_rows")[0].as_py() for f in files))


def make_project(work, schema_path):
    """A project whose one pipeline uses the peers' row schema, typed for the snapshot."""
    project = os.path.join(work, "project")
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    os.makedirs(os.path.join(project, "pipelines"), exist_ok=True)
    os.makedirs(os.path.join(project, "schemas", "peer_bench"), exist_ok=True)
    shutil.copytree(os.path.join(repo, "schemas", "reference"), os.path.join(project, "schemas", "reference"),
                    dirs_exist_ok=True)
    schema = json.load(open(schema_path))
    schema["x-dataset"], schema["x-version"] = "peer_bench", "1"
    # The snapshot has its own force_id and period (lineage): the file's columns of those names
    # are kept as reported_force_id and reported_period, matched to the header by alias.
    props = schema["properties"]
    for name in ("force_id", "period"):
        props[f"reported_{name}"] = dict(props.pop(name), **{"x-aliases": [name]})
    schema["required"] = [f"reported_{n}" if n in ("force_id", "period") else n for n in schema["required"]]
    schema["properties"]["date"]["x-snapshot"] = {"type": "timestamp"}
    # Typed as schemas/stop_search/v1.json types them.
    for k in ("outcome_linked", "removal_of_more_than_outer_clothing"):
        schema["properties"][k]["x-snapshot"] = {"type": "boolean"}
    for k in ("latitude", "longitude"):
        schema["properties"][k]["x-snapshot"] = {"type": "float64"}
    json.dump(schema, open(os.path.join(project, "schemas", "peer_bench", "v1.json"), "w"), indent=1)
    open(os.path.join(project, "pipelines", "peer_bench.toml"), "w").write(
        'dataset = "peer_bench"\ntitle = "Peer benchmark rows"\nschema = "peer_bench/v1"\n'
        'schedule = "0 0 * * * *"\n[period]\ntype = "monthly"\ndeadline_days = 28\n'
        # The planted defects are 0.55% of rows: leave them out and accept the rest, so the run
        # writes and keeps the whole snapshot, as it would for a real month.
        "[decision]\nmax_error_row_share = 0.01\n"
        "[limits]\nmax_file_bytes = 8_589_934_592\nmax_rows = 100_000_000\nmax_cell_bytes = 65_536\n")
    return project


def mem_gb():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 1024 / 1024


if __name__ == "__main__":
    main()
