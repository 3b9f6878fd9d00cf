"""How the shipped world tables were compiled from pycountry (run once; not at load time).

``lfmlab.data.world`` reads only the CSV files beside this module, so the facts (and the
world-lm weights trained on them) cannot drift when pycountry is upgraded. This script
(re)writes the pycountry-derived parts:

* ``world_countries.csv``: the ``iso_code`` (ISO 3166-1 alpha-3) and ``currency`` (ISO 4217
  name, ASCII-folded) columns, from each row's ``alpha2`` and ``currency_code``;
* ``world_regions.csv``: top-level ISO 3166-2 subdivisions of ``REGION_COUNTRIES``, minus
  outlying areas, names that equal a country's or an element's, and names that occur in two
  of those countries (Punjab).

    python -m lfmlab.data.world_tables      # rewrites the two files; review the git diff
"""
from __future__ import annotations

import csv

from lfmlab.data.world import _DATA_DIR, REGION_COUNTRIES, _read_csv, ascii_fold

SKIPPED_SUBDIVISION_TYPES = {"Outlying area", "Pakistan administered area"}
COUNTRY_COLUMNS = ["alpha2", "name", "capital", "continent", "language", "currency_code", "iso_code", "currency"]


def _write(name: str, columns: list[str], rows: list[dict[str, str]]) -> None:
    with open(_DATA_DIR / name, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def rebuild() -> None:
    import pycountry

    countries = _read_csv("world_countries.csv")
    for row in countries:
        country = pycountry.countries.get(alpha_2=row["alpha2"])
        currency = pycountry.currencies.get(alpha_3=row["currency_code"])
        if country is None or currency is None:
            raise ValueError(f"pycountry knows no country {row['alpha2']!r} or currency {row['currency_code']!r}")
        row["iso_code"], row["currency"] = country.alpha_3, ascii_fold(currency.name)
    _write("world_countries.csv", COUNTRY_COLUMNS, countries)

    taken = {r["name"] for r in countries} | {r["name"] for r in _read_csv("world_elements.csv")}
    by_name: dict[str, set[tuple[str, str]]] = {}
    for code in REGION_COUNTRIES:
        for sub in sorted(pycountry.subdivisions.get(country_code=code) or [], key=lambda s: s.code):
            if sub.parent_code is None and sub.type not in SKIPPED_SUBDIVISION_TYPES:
                by_name.setdefault(ascii_fold(sub.name), set()).add((code, sub.code))
    regions = [{"name": name, "country_alpha2": next(iter(hits))[0], "iso_3166_2": next(iter(hits))[1]}
               for name, hits in sorted(by_name.items())
               if len({c for c, _ in hits}) == 1 and len(hits) == 1 and name not in taken]
    _write("world_regions.csv", ["name", "country_alpha2", "iso_3166_2"], regions)
    print(f"wrote {len(countries)} countries and {len(regions)} regions (pycountry {pycountry.__version__})")


if __name__ == "__main__":
    rebuild()
