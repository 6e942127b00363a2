"""Writes the workbooks the limit tests need, streaming, as a minimal XLSX (the parts Excel
itself requires and no more), so a million rows take seconds rather than openpyxl's minutes.

    python make_workbook.py OUT rows N            # header `metric,value`, N rows of figures
    python make_workbook.py OUT big-cell BYTES     # one shared string of BYTES characters
    python make_workbook.py OUT shared-strings BYTES  # shared strings unpacking past BYTES
    python make_workbook.py OUT encrypted          # an openpyxl workbook, password-protected
    python make_workbook.py OUT not-a-workbook     # a zip archive holding a text file
"""

import io
import sys
import zipfile

CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
</Types>"""
RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="data" sheetId="1" r:id="rId1"/></sheets>
</workbook>"""
WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
</Relationships>"""
SHEET_HEAD = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"""
SHEET_TAIL = "</sheetData></worksheet>"


def shared(strings):
    yield '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    yield f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{len(strings)}" uniqueCount="{len(strings)}">'
    for s in strings:
        yield f"<si><t>{s}</t></si>"
    yield "</sst>"


def xlsx(out, strings, rows):
    """`strings`: the shared strings (an iterable of XML text); `rows`: each a list of cells,
    ("s", index) for a shared string, ("n", text) for a number."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        z.writestr("xl/workbook.xml", WORKBOOK)
        z.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        with z.open("xl/sharedStrings.xml", "w", force_zip64=True) as f:
            for part in strings:
                f.write(part.encode())
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as f:
            f.write(SHEET_HEAD.encode())
            buf = io.StringIO()
            for r, row in enumerate(rows, start=1):
                buf.write(f'<row r="{r}">')
                for c, (kind, value) in enumerate(row):
                    ref = f"{chr(65 + c)}{r}"
                    if kind == "s":
                        buf.write(f'<c r="{ref}" t="s"><v>{value}</v></c>')
                    else:
                        buf.write(f'<c r="{ref}"><v>{value}</v></c>')
                buf.write("</row>")
                if buf.tell() > 1 << 20:
                    f.write(buf.getvalue().encode())
                    buf = io.StringIO()
            f.write(buf.getvalue().encode())
            f.write(SHEET_TAIL.encode())


def main():
    out, kind = sys.argv[1], sys.argv[2]
    arg = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if kind == "rows":
        header = [("s", 0), ("s", 1)]
        body = ([("s", 2), ("n", str(i % 1000))] for i in range(arg))
        xlsx(out, shared(["metric", "value", "population"]), _chain(header, body))
    elif kind == "big-cell":
        rows = [[("s", 0), ("s", 1)], [("s", 2), ("n", "1")], [("s", 3), ("n", "2")]]
        xlsx(out, shared(["metric", "value", "population", "x" * arg]), rows)
    elif kind == "shared-strings":
        count = arg // 24 + 1
        strings = ["metric", "value"] + [f"s{i:020d}" for i in range(count)]
        xlsx(out, shared(strings), [[("s", 0), ("s", 1)], [("s", 2), ("n", "1")]])
    elif kind == "encrypted":
        import openpyxl
        from msoffcrypto.format.ooxml import OOXMLFile

        wb = openpyxl.Workbook()
        ws = wb.active
        ws.title = "data"
        ws.append(["metric", "value"])
        ws.append(["population", 1000])
        plain = io.BytesIO()
        wb.save(plain)
        plain.seek(0)
        with open(out, "wb") as f:
            OOXMLFile(plain).encrypt("a password", f)
    elif kind == "not-a-workbook":
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("notes.txt", "metric,value\npopulation,1\n")
    else:
        sys.exit(f"unknown kind {kind}")


def _chain(first, rest):
    yield first
    yield from rest


if __name__ == "__main__":
    main()
