"""The data-pack workbook benchmark's two halves, run by tests/bench/pack.sh.

    python pack.py generate ROWS OUT.xlsx   # a pack of ROWS rows in sheet `data`, by openpyxl
    python pack.py read OUT.xlsx            # python-calamine reads the sheet, and nothing else

The pack cycles through every metric of the catalogue (schemas/catalogue/v1.json) and every
combination of its dimensions' codes (blank, the total, included), so beyond a few thousand
rows breakdowns repeat: the service then also reports each repeated row (`metric_duplicate`).
Values are counts drawn from a fixed seed; a few are suppression markers.
"""
import itertools
import json
import random
import sys


def generate(rows, out):
    import openpyxl

    catalogue = json.load(open("schemas/catalogue/v1.json"))
    codes = {}
    for path in ("ethnic_group", "outcome_group", "use_of_force_tactic", "arrest_age_group",
                 "gender", "offence_group", "worker_type", "rank"):
        codes[path] = [c["code"] for c in json.load(open(f"schemas/reference/{path}.json"))["codes"]]
    columns = []
    for m in catalogue["metrics"]:
        for d in m["dimensions"]:
            if d["name"] not in columns:
                columns.append(d["name"])
    combos = []
    for m in catalogue["metrics"]:
        dims = m["dimensions"]
        choices = [[""] + codes[d["codelist"]] for d in dims]
        for combo in itertools.product(*choices):
            combos.append((m["id"], dict(zip((d["name"] for d in dims), combo))))
    rng = random.Random(20261204)
    wb = openpyxl.Workbook(write_only=True)
    sheet = wb.create_sheet("data")
    sheet.append(["force", "period", "metric", *columns, "value", "numerator", "denominator", "note"])
    for i in range(rows):
        metric, breakdown = combos[i % len(combos)]
        value = "[c]" if rng.random() < 0.01 else rng.randint(0, 5000)
        sheet.append(["kent", "FY2024-25", metric, *(breakdown.get(c, None) or None for c in columns),
                      value, None, None, None])
    wb.save(out)


def read(path):
    from python_calamine import CalamineWorkbook

    rows = CalamineWorkbook.from_path(path).get_sheet_by_name("data").to_python()
    print(len(rows), file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(int(sys.argv[2]), sys.argv[3])
    else:
        read(sys.argv[2])
