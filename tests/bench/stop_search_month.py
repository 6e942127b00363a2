"""Rewrites the peer benchmark's generated file as one month of one force's stop and search,
in the data.police.uk extract format that pipelines/stop_search.toml reads: the same values
(with their planted defects), dated in May 2023, with a search type and a time of day.

    python stop_search_month.py IN.csv OUT.csv

Used by tests/bench/stop_search.sh, so that a run exercises everything the stop-and-search
profile declares (its shares, the subset counted for rates, the ethnicity agreement).
"""
import csv
import sys

HEADER = [
    "Type", "Date", "Part of a policing operation", "Policing operation", "Latitude", "Longitude",
    "Gender", "Age range", "Self-defined ethnicity", "Officer-defined ethnicity", "Legislation",
    "Object of search", "Outcome", "Outcome linked to object of search",
    "Removal of more than just outer clothing",
]
TYPES = ["Person search"] * 8 + ["Vehicle search", "Person and Vehicle search"]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f_in, open(dst, "w", newline="") as f_out:
        out = csv.writer(f_out, lineterminator="\n")
        out.writerow(HEADER)
        for i, row in enumerate(csv.DictReader(f_in)):
            day = row["date"][8:10]
            day = day if day.isdigit() and 1 <= int(day) <= 31 else "15"
            minutes = (i * 37) % 1440
            # One search in twenty-five is timed at midnight, as in real extracts.
            when = f"2023-05-{day}T00:00:00+00:00" if i % 25 == 0 else \
                f"2023-05-{day}T{minutes // 60:02d}:{minutes % 60:02d}:00+00:00"
            out.writerow([
                TYPES[i % len(TYPES)], when, "False", "", row["latitude"], row["longitude"],
                row["gender"], row["age_range"], row["self_defined_ethnicity"],
                row["officer_defined_ethnicity"], row["legislation"], row["object_of_search"],
                row["outcome"], row["outcome_linked"].capitalize(),
                row["removal_of_more_than_outer_clothing"].capitalize(),
            ])


if __name__ == "__main__":
    main()
