"""Reads a force-returns bucket with independent tools (pyarrow, DuckDB) and prints JSON facts.

Used by the Rust integration tests: they compare these facts with what the service says it
wrote, so a snapshot that only our own code could read would fail the tests.

    python read_bucket.py BUCKET_DIR DATASET
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    root, dataset = sys.argv[1], sys.argv[2]
    out = {"snapshots": [], "quality": {}}
    for path in sorted(glob.glob(os.path.join(root, "snapshots", dataset, "*", "*", "*.parquet"))):
        f = pq.ParquetFile(path)
        table = f.read()
        meta = {k.decode(): v.decode() for k, v in (f.metadata.metadata or {}).items()
                if k.decode().startswith("force_returns.")}
        out["snapshots"].append({
            "key": os.path.relpath(path, root).replace(os.sep, "/"),
            "rows": table.num_rows,
            "types": {field.name: str(field.type) for field in table.schema},
            "metadata": meta,
            "compression": f.metadata.row_group(0).column(0).compression if f.metadata.num_row_groups else None,
            "distinct_sde_groups": sorted(
                {v for v in table.column("self_defined_ethnicity_group").to_pylist() if v is not None}
            ) if "self_defined_ethnicity_group" in table.schema.names else [],
        })
    # The manifest: one part a year of periods, read together as a consumer reads them.
    manifest = os.path.join(root, "snapshots", dataset, "_manifest", "*.json")
    if glob.glob(manifest):
        con = duckdb.connect()
        pattern = os.path.join(root, "snapshots", dataset, "*", "*", "*.parquet")
        rows = con.execute(
            f"""SELECT force_id, period, count(*) FROM read_parquet('{pattern}', hive_partitioning = false)
                WHERE submission_id IN (SELECT unnest(current).submission_id FROM read_json('{manifest}'))
                GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        out["current_rows"] = [[str(r[0]), str(r[1]), int(r[2])] for r in rows]
    for table in ("submissions", "findings"):
        pattern = os.path.join(root, "quality", table, "*", "*.parquet")
        files = sorted(glob.glob(pattern))
        if files:
            t = pa.concat_tables([pq.ParquetFile(f).read() for f in files])
            out["quality"][table] = {"rows": t.num_rows, "columns": t.schema.names}
            if table == "findings":
                out["quality"][table]["values"] = [v for v in t.column("value").to_pylist() if v is not None]
                out["quality"][table]["messages"] = t.column("message").to_pylist()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
