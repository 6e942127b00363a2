"""Reads a data pack template with openpyxl and fills it in, as a force's analyst would.

    python fill_template.py catalogue.json template.xlsx filled.xlsx

Prints, as JSON, what the template holds (its sheets, protection, drop-downs and pre-filled
rows) and the rows the catalogue makes mandatory, worked out here from `force-returns catalogue
--format json` alone, for the test to compare. Then writes every pre-filled row's value from one
consistent set of figures, so that parts add up to their totals and every rate, ratio and share
agrees with the counts it is computed from:

- a count is `base x` the product, over the metric's dimensions, of a weight per code (the
  code's position mod 5, plus 1) at the row's code, or the weights' sum over the codes the
  metric is given for where the row leaves the dimension blank (its total); a count used as
  the denominator of a rate per 1,000 (the population) has a base a million times larger;
- a rate, ratio or percentage is its numerator over its denominator, each evaluated at the
  row's codes with the part's fixed codes put in (several fixed codes add up), times 1,000,
  1 or 100.
"""

import itertools
import json
import sys

import openpyxl

SCALE = {"rate_per_1000": 1000.0, "ratio": 1.0, "percent": 100.0}
ADDITIVE = {"count", "headcount", "fte"}


def main():
    catalogue_path, template_path, out_path = sys.argv[1:4]
    with open(catalogue_path, encoding="utf-8") as f:
        catalogue = json.load(f)
    metrics = {m["id"]: m for m in catalogue["metrics"]}
    per_thousand = {
        m["denominator"] for m in catalogue["metrics"] if m["unit"] == "rate_per_1000"
    }

    def weight(code_index):
        return code_index % 5 + 1

    def given(metric, dim):
        excluded = set(metric["not_for"].get(dim["name"], []))
        return [(i, c) for i, c in enumerate(dim["codes"]) if c not in excluded]

    def value(metric_id, key):
        metric = metrics[metric_id]
        if metric["unit"] in ADDITIVE:
            v = 1000 * (1_000_000 if metric_id in per_thousand else 1)
            for dim in metric["dimensions"]:
                code = key.get(dim["name"])
                if code is None:
                    v *= sum(weight(i) for i, _ in given(metric, dim))
                else:
                    v *= weight(dim["codes"].index(code))
            return v
        num = part(metric["numerator"], metric["numerator_at"], key)
        den = part(metric["denominator"], metric["denominator_at"], key)
        return num / den * SCALE[metric["unit"]]

    def part(metric_id, at, key):
        at = at or {}
        names = list(at)
        total = 0.0
        for codes in itertools.product(*(at[n] for n in names)):
            fixed = dict(key)
            fixed.update(zip(names, codes))
            total += value(metric_id, fixed)
        return total

    expected = []
    for metric in catalogue["metrics"]:
        if not metric["mandatory"] or metric["cadence"] != "financial_year":
            continue
        for breakdown in metric["breakdowns"]:
            dims = [next(d for d in metric["dimensions"] if d["name"] == n) for n in breakdown]
            for combination in itertools.product(*(given(metric, d) for d in dims)):
                key = {d["name"]: c for d, (_, c) in zip(dims, combination)}
                expected.append([metric["id"], dict(sorted(key.items()))])

    wb = openpyxl.load_workbook(template_path)
    data = wb["data"]
    header = [c.value for c in data[1]]
    dimension_names = {d["name"] for m in catalogue["metrics"] for d in m["dimensions"]}
    rows = []
    for r in range(2, data.max_row + 1):
        cells = {header[c - 1]: data.cell(row=r, column=c).value for c in range(1, len(header) + 1)}
        if cells.get("metric") is None:
            continue
        key = {n: cells[n] for n in dimension_names if cells.get(n) is not None}
        rows.append({"force": cells.get("force"), "period": cells.get("period"),
                     "metric": cells["metric"], "key": dict(sorted(key.items()))})
        data.cell(row=r, column=header.index("value") + 1,
                  value=round(value(cells["metric"], key), 6))

    validations = []
    for dv in data.data_validations.dataValidation:
        validations.append({"type": dv.type, "formula": dv.formula1, "range": str(dv.sqref)})
    facts = {
        "sheets": wb.sheetnames,
        "states": {ws.title: ws.sheet_state for ws in wb.worksheets},
        "protected": data.protection.sheet,
        "header": header,
        "header_locked": [c.protection.locked for c in data[1]],
        "first_row_locked": [c.protection.locked for c in data[2]] if data.max_row > 1 else [],
        "frozen": data.freeze_panes,
        "validations": validations,
        "rows": rows,
        "expected": expected,
    }
    wb.save(out_path)
    json.dump(facts, sys.stdout)


if __name__ == "__main__":
    main()
