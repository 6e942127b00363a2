"""Reads back everything a run wrote into a local bucket and writes it as canonical text: the
recording of the golden test (tests/it/golden.rs; what is recorded, and why, is in
tests/golden/README.md).

    python golden_dump.py BUCKET_DIR OUT_DIR

OUT_DIR/run/summaries.jsonl holds the run's summary of every upload, in processing order
(written by the Rust test). The script writes:

- OUT_DIR/recording/...: the files compared with tests/golden/<history>/;
- OUT_DIR/full/...: the whole canonical text of every family the recording keeps as digests, so
  that two runs can be compared row by row with `diff -r`.

Parquet files are read with pyarrow, independently of the service's own reader. Values are
written exactly: floats in their shortest round-trip form, timestamps to the microsecond. The
normalisations are the local store's etag (its file's size, modification time and inode, which
differ from one checkout to the next), written `<etag:NAME>`, and the submission id (a hash of
the upload key and that etag), written `<sid:NAME>`; NAME is the upload's file name, or its key
without `incoming/` when another upload has the same file name.
"""
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# The text of the recording is pyarrow's rendering of values (floats, timestamps); tests/run
# installs this version.
PYARROW = "21.0.0"
# A family is recorded in full when its canonical text is at most this long; longer, as one
# digest line per file.
FULL_LIMIT = 256 * 1024
# Families recorded as digests whatever their size: record-level snapshots (their rows are the
# uploads' rows, typed), the archived copies of the uploads, and the HTML (rendered from the
# data the JSON records).
DIGESTS = ("tables/snapshots.stop_search", "archive", "feedback/reports.html",
           "feedback/summaries.html")
# Rows of Parquet files rendered at once (memory stays at about one such batch).
CHUNK_ROWS = 50_000
SID = re.compile(r"(?<![0-9a-f])[0-9a-f]{24}(?![0-9a-f])")


def digest(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()[:16]


def compact(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Normaliser:
    """Replaces submission ids and etags by labels naming their upload."""

    def __init__(self, summaries):
        keys_by_name = {}
        for s in summaries:
            keys_by_name.setdefault(s["source_key"].rsplit("/", 1)[-1], set()).add(s["source_key"])
        self.labels = {}
        self.etags = {}
        for s in summaries:
            key = s["source_key"]
            name = key.rsplit("/", 1)[-1]
            label = "<sid:" + (name if len(keys_by_name[name]) == 1 else key.removeprefix("incoming/")) + ">"
            if self.labels.setdefault(s["submission_id"], label) != label:
                sys.exit(f"submission id {s['submission_id']} names two uploads")
            self.etags[s["etag"]] = label.replace("<sid:", "<etag:", 1)

    def text(self, s):
        return SID.sub(lambda m: self.labels.get(m.group(0), m.group(0)), s)

    def json(self, value):
        if isinstance(value, str):
            return self.etags.get(value) or self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.json(v) for k, v in value.items()}
        return value


def canonical_json(value, indent=""):
    """Pretty JSON in which a container of scalars sits on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
        items = [f"{inner}{compact(k)}: {canonical_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [inner + canonical_json(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return compact(value)


class Family:
    """The canonical text of one family of objects, built file by file: kept in memory while it
    is short enough to be recorded in full, written to OUT_DIR/full beyond that. Either way one
    digest line per file is kept."""

    def __init__(self, name, out):
        self.name = name
        self.full_path = os.path.join(out, "full", name + ".txt")
        self.buffer = io.StringIO()
        self.spill = None
        self.size = 0
        self.digest_lines = []

    def add(self, header, body, digest_line):
        text = header + "\n" + "".join(line + "\n" for line in body)
        self.size += len(text.encode())
        if self.spill is None and (self.name in DIGESTS or self.size > FULL_LIMIT):
            os.makedirs(os.path.dirname(self.full_path), exist_ok=True)
            self.spill = open(self.full_path + ".body", "w+", encoding="utf-8", newline="\n")
            self.spill.write(self.buffer.getvalue())
            self.buffer = None
        (self.spill or self.buffer).write(text)
        self.digest_lines.append(digest_line)

    def finish(self, head, digest_sections=()):
        """The recording: the head and every file in full, or, past the limit, the head,
        `digest_sections` and the digest lines (the full text then goes to OUT_DIR/full)."""
        top = "\n".join(head) + "\n"
        if self.spill is None:
            return top + self.buffer.getvalue()
        size = len(top.encode()) + self.size
        with open(self.full_path, "w", encoding="utf-8", newline="\n") as f:
            f.write(top)
            self.spill.seek(0)
            shutil.copyfileobj(self.spill, f)
        self.spill.close()
        os.remove(self.full_path + ".body")
        lines = [head[0] + f"; recorded as digests (the full text, {size} bytes, is in full/)"]
        lines.extend(head[1:])
        for section in digest_sections:
            lines.extend(section)
        lines.extend(self.digest_lines)
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Parquet tables
# ---------------------------------------------------------------------------------------------


def field_text(field):
    return f"{field.name}: {field.type}{'' if field.nullable else ' not null'}"


def render_column(column, norm):
    """Each cell as JSON text: strings quoted, numbers exact, null as `null`."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        if len(column) and pc.any(pc.match_substring_regex(column, "[0-9a-f]{24}")).as_py():
            unique = pc.unique(column)
            labels = pa.array([None if v is None else norm.text(v) for v in unique.to_pylist()],
                              pa.string())
            column = labels.take(pc.index_in(column, unique))
        if len(column) and pc.any(pc.match_substring_regex(column, r'[\x00-\x1f"\\]')).as_py():
            text = pa.array([None if v is None else compact(v) for v in column.to_pylist()],
                            pa.string())
        else:
            text = pc.binary_join_element_wise('"', column, '"', "")
    elif pa.types.is_floating(column.type):
        text = pc.cast(column, pa.string())
        # JSON has no NaN or infinity: they are written as strings (the type says float).
        finite = pc.fill_null(pc.is_finite(column), True)
        text = pc.if_else(finite, text, pc.binary_join_element_wise('"', text, '"', ""))
    elif pa.types.is_temporal(column.type):
        text = pc.binary_join_element_wise('"', pc.cast(column, pa.string()), '"', "")
    else:
        text = pc.cast(column, pa.string())
    return pc.fill_null(text, "null")


def joined(column):
    """Every cell of a rendered column, each followed by a line break."""
    if not len(column):
        return ""
    lists = pa.ListArray.from_arrays(pa.array([0, len(column)], pa.int32()), column)
    return pc.binary_join(lists, "\n")[0].as_py() + "\n"


def table_family(name, root, keys, norm, family):
    """A family of Parquet files (one table split by partition, files in key order): the schema
    of its files, each file's lineage metadata and rows, rendered a batch of files at a time."""
    schemas = {}
    hashers = {}
    files = 0
    total = 0
    sample, forces = ["## sample: the first two rows of each force's first file"], set()
    pending = []

    def flush():
        nonlocal total
        if not pending:
            return
        number = pending[0][3]
        table = pa.concat_tables([t for _, t, _, _ in pending])
        columns = [render_column(c.combine_chunks(), norm) for c in table.columns]
        for i, column in enumerate(columns):
            hashers.setdefault((number, i), hashlib.sha256()).update(joined(column).encode())
        rows = (pc.binary_join_element_wise("[", pc.binary_join_element_wise(*columns, ","), "]", "")
                .to_pylist() if columns else [])
        start = 0
        for key, t, metadata, _ in pending:
            body = rows[start:start + t.num_rows]
            start += t.num_rows
            total += t.num_rows
            meta = f" metadata={compact(metadata)}" if metadata else ""
            other = f" schema={number}" if number > 1 else ""
            family.add(f"== {key} rows={len(body)}{other}{meta}", body,
                       f"{key} rows={len(body)}{other} rows_sha={digest(chr(10).join(body))}"
                       + (f" metadata_sha={digest(compact(metadata))}" if metadata else ""))
            force = re.search(r"force=([^/]+)/", key)
            force = force.group(1) if force else key
            if body and force not in forces:
                forces.add(force)
                sample.append(f"== {key}{meta}")
                sample.extend(body[:2])
        pending.clear()

    for key in keys:
        f = pq.ParquetFile(os.path.join(root, key))
        table = f.read(use_threads=False)
        if "source_row" in table.schema.names:
            table = table.sort_by("source_row")
        schema = tuple(field_text(field) for field in table.schema)
        number = schemas.setdefault(schema, len(schemas) + 1)
        metadata = {
            k.decode(): norm.text(v.decode())
            for k, v in sorted((f.metadata.metadata or {}).items())
            if k.decode().startswith("force_returns.")
        }
        if pending and (pending[0][3] != number
                        or sum(t.num_rows for _, t, _, _ in pending) + table.num_rows > CHUNK_ROWS):
            flush()
        pending.append((norm.text(key), table, metadata, number))
        files += 1
    flush()

    head = [f"# {name}: {files} files, {total} rows"]
    for schema, number in schemas.items():
        head.append(f"## schema {number}" if len(schemas) > 1 else "## schema")
        head.extend(schema)
    sections = []
    if len(schemas) == 1:
        names = [line.split(":", 1)[0] for line in next(iter(schemas))]
        head.append("## columns " + compact(names))
        sections.append(["## column digests: every cell of the column over every file, in key "
                         "and row order"]
                        + [f"{n} {hashers[(1, i)].hexdigest()[:16] if (1, i) in hashers else '-'}"
                           for i, n in enumerate(names)])
    sections.append(sample)
    sections.append(["## files: key, rows, digest of the rows, digest of the lineage metadata"])
    return family.finish(head, sections)


# ---------------------------------------------------------------------------------------------
# Documents and other objects
# ---------------------------------------------------------------------------------------------


def read_bytes(root, key):
    with open(os.path.join(root, key), "rb") as f:
        return f.read()


def document_family(name, root, keys, kind, norm, family):
    """JSON, CSV or HTML documents: each one's canonical text."""
    for key in keys:
        text = read_bytes(root, key).decode("utf-8")
        note = ""
        if text.startswith("\ufeff"):
            text, note = text[1:], " bom"
        if kind == "json":
            body = canonical_json(norm.json(json.loads(text))).split("\n")
        else:
            body = norm.text(text).rstrip("\n").split("\n")
        label = norm.text(key)
        family.add(f"== {label}{note}", body,
                   f"{label}{note} lines={len(body)} sha={digest(chr(10).join(body))}")
    return family.finish([f"# {name}: {len(keys)} files"],
                         [["## files: key, lines, digest of the canonical text"]])


def bytes_family(name, root, keys, norm):
    """Objects compared by their bytes alone: size and digest of each."""
    lines = [f"# {name}: {len(keys)} objects, each with its size and the digest of its bytes"]
    for key in keys:
        data = read_bytes(root, key)
        lines.append(f"{norm.text(key)} bytes={len(data)} sha={digest(data)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def walk(root, top):
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, top)):
        out.extend(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/") for f in files)
    return sorted(out)


def family_of(key):
    """The recording file of a written object, and how it is read."""
    if key.endswith(".parquet"):
        head = []
        for part in key.split("/")[:-1]:
            if "=" in part:
                break
            head.append(part)
        return "tables/" + ".".join(head), "table"
    if re.fullmatch(r"snapshots/[^/]+/_manifest/[^/]+\.json", key):
        return "manifest." + key.split("/")[1], "json"
    if key.startswith("archive/"):
        return "archive", "bytes"
    m = re.fullmatch(r"feedback/[^/]+/summary-[^/]+\.(json|html)", key)
    if m:
        return "feedback/summaries." + m.group(1), m.group(1)
    m = re.fullmatch(r"feedback/.+\.(json|html|csv)", key)
    if m:
        return "feedback/reports." + m.group(1), m.group(1)
    return "other", "bytes"


def uploaded_at(path):
    ns = os.stat(path).st_mtime_ns
    at = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def uploads(root, summaries, norm):
    """Every upload in processing order: the file as uploaded, then what the run says of it."""
    incoming = set(walk(root, "incoming"))
    lines = []
    for s in summaries:
        key = s["source_key"]
        if key not in incoming:
            sys.exit(f"the run processed {key}, which is not in the bucket")
        incoming.discard(key)
        data = read_bytes(root, key)
        line = {"key": key, "uploaded_at": uploaded_at(os.path.join(root, key)),
                "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        line.update((k, v) for k, v in norm.json(s).items() if k != "source_key")
        lines.append(compact(line))
    if incoming:
        sys.exit(f"uploads the run did not process: {sorted(incoming)}")
    return "\n".join(lines) + "\n"


def main():
    root, out = sys.argv[1], sys.argv[2]
    if pa.__version__ != PYARROW:
        sys.exit(f"the recording is written with pyarrow {PYARROW}, this is {pa.__version__}: "
                 f"install it (bash tests/run does) or point FORCE_RETURNS_TEST_PYTHON at a "
                 f"Python that has it")
    with open(os.path.join(out, "run", "summaries.jsonl"), encoding="utf-8") as f:
        summaries = [json.loads(line) for line in f if line.strip()]
    norm = Normaliser(summaries)
    recording = {"uploads.jsonl": uploads(root, summaries, norm)}
    families = {}
    for top in sorted(os.listdir(root)):
        # incoming/ holds the uploads (recorded above), _state/ the service's own bookkeeping;
        # a dot folder is the local store's scratch space, not an object.
        if top not in ("incoming", "_state") and not top.startswith("."):
            for key in walk(root, top):
                families.setdefault(family_of(key), []).append(key)
    for (name, kind), keys in sorted(families.items()):
        # In the order of the names as recorded: submission ids change from run to run.
        keys = sorted(keys, key=norm.text)
        if kind == "table":
            text = table_family(name, root, keys, norm, Family(name, out))
        elif kind == "bytes":
            text = bytes_family(name, root, keys, norm)
        else:
            text = document_family(name, root, keys, kind, norm, Family(name, out))
        recording[name + ".txt"] = text
    for name, text in recording.items():
        path = os.path.join(out, "recording", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


if __name__ == "__main__":
    main()
