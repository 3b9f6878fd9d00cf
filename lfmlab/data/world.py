"""Real-world facts as (subject, relation, object) triples, with sentence templates.

The facts are what ``world-lm`` learns in pretraining and what the tuning, retrieval and
editing notebooks ask it about. Everything ships with the package; nothing is downloaded.

Sources, one per relation:

- ``capital``, ``continent``, ``language``: ``world_countries.csv``, compiled by hand from the
  public CIA World Factbook and Wikipedia lists (capitals, official languages, UN M49
  regions), 2024-2026. 195 countries: the 193 UN member states and the 2 observers.
  Where a country has several capitals we take the constitutional/official one (Bolivia:
  Sucre, Netherlands: Amsterdam, Benin: Porto-Novo); South Africa: Pretoria (executive).
  Continents follow UN M49 (so Russia is in Europe; Turkey, Cyprus and the Caucasus in
  Asia; Egypt in Africa), with the Americas split at Panama/Colombia. Language: the one
  official language most used in everyday life (Belarus: Russian, Ireland: English).
  Some capitals share their country's name (Singapore, Djibouti, Monaco, San Marino,
  Luxembourg, Vatican City): the facts are kept, they are real.
- ``currency_code``: ISO 4217 code from ``world_countries.csv`` (as of 2026: Croatia and
  Bulgaria use the euro, Zimbabwe the ZWG).
- ``currency``: the ISO 4217 currency name for that code, from pycountry, ASCII-folded.
- ``iso_code``: ISO 3166-1 alpha-3 code, from pycountry.
- ``region_country``: top-level ISO 3166-2 subdivisions of ``REGION_COUNTRIES``, from
  pycountry, ASCII-folded (``world_regions.csv``); outlying areas are left out, and so are
  names that equal a country's, or occur in two of those countries (Punjab).
  The pycountry-derived columns and files are compiled once by ``lfmlab.data.world_tables``
  (pycountry 26.2.16) and shipped, so the facts never drift with a pycountry upgrade.
- Language: Mali (Bambara), Niger (Hausa) and Burkina Faso (Moore) follow their 2023-2025
  constitutional changes, which made national languages official and French a working language.
- ``element_symbol``: ``world_elements.csv``, the 118 elements with IUPAC names and symbols.

About 10% of the facts of each relation are ``heldout``: the model never sees them in
pretraining, so they serve as new knowledge for retrieval, RAG and editing.

    >>> from lfmlab.data import world
    >>> w = world.load()
    >>> w.lookup("Peru", "capital").object
    'Lima'
    >>> w.prompt("Peru", "capital")
    'The capital of Peru is'
"""
from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lfmlab.core.types import Tokenizer
from lfmlab.data.world_relations import QUESTIONS, RELATIONS, TEMPLATES, Relation

_DATA_DIR = Path(__file__).parent

SPLITS = ("train", "heldout")
HELDOUT_MODULUS = 10  # a fact is held out when sha256("subject|relation") % 10 == 0
REGION_COUNTRIES = ("US", "CA", "MX", "BR", "AU", "IN", "PK", "DE", "IT", "ZA")


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, object) triple and its split ("train" or "heldout")."""

    subject: str
    relation: str
    object: str
    split: str


@dataclass(frozen=True)
class EditRequest:
    """A CounterFact-style edit: make the model say ``target_new`` instead of ``target_true``.

    ``prompt`` and ``paraphrase_prompts`` end just before the object. ``neighbourhood`` holds
    (prompt, object) pairs of other subjects with the same relation, which should not change;
    ``same_subject`` holds this subject's facts of other relations, which should not change either.
    """

    subject: str
    relation: str
    prompt: str
    target_true: str
    target_new: str
    paraphrase_prompts: tuple[str, ...]
    neighbourhood: tuple[tuple[str, str], ...]
    same_subject: tuple[tuple[str, str], ...]


def ascii_fold(text: str) -> str:
    """Drop accents and typographic quotes: "Bogotá" -> "Bogota", "Pa’anga" -> "Pa'anga"."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def split_of(subject: str, relation: str) -> str:
    """The split of a fact, from a stable hash (the same on every machine and Python run)."""
    digest = hashlib.sha256(f"{subject}|{relation}".encode("utf-8")).hexdigest()
    return "heldout" if int(digest, 16) % HELDOUT_MODULUS == 0 else "train"


def fill(template: str, subject: str, obj: str = "") -> str:
    """Fill a template; "{subject}'s" becomes a proper possessive ("Texas'", "Peru's")."""
    possessive = subject + ("'" if subject.endswith("s") else "'s")
    return template.replace("{subject}'s", possessive).replace("{subject}", subject).replace("{object}", obj)


def _read_csv(name: str) -> list[dict[str, str]]:
    with open(_DATA_DIR / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _country_triples() -> list[tuple[str, str, str]]:
    triples = []
    for row in _read_csv("world_countries.csv"):
        name = row["name"]
        triples += [(name, "capital", row["capital"]), (name, "continent", row["continent"]),
                    (name, "language", row["language"]), (name, "currency", row["currency"]),
                    (name, "currency_code", row["currency_code"]), (name, "iso_code", row["iso_code"])]
    return triples


def _region_triples(country_names: dict[str, str]) -> list[tuple[str, str, str]]:
    return [(row["name"], "region_country", country_names[row["country_alpha2"]])
            for row in _read_csv("world_regions.csv")]


def _element_triples() -> list[tuple[str, str, str]]:
    return [(row["name"], "element_symbol", row["symbol"]) for row in _read_csv("world_elements.csv")]


def _check(facts: list[Fact]) -> None:
    """Fail loudly if the shipped tables break the dataset's promises."""
    kind_of: dict[str, str] = {}
    kinds = {r.name: r.subject_kind for r in RELATIONS}
    for f in facts:
        for text in (f.subject, f.object):
            if not text or not text.isascii() or any(c in text for c in ",()[]"):
                raise ValueError(f"not a clean ASCII name: {text!r} in {f}")
        if kind_of.setdefault(f.subject, kinds[f.relation]) != kinds[f.relation]:
            raise ValueError(f"subject {f.subject!r} is both a {kind_of[f.subject]} and a {kinds[f.relation]}")
    for name, t in TEMPLATES.items():
        for template in t["train"] + t["heldout"]:
            if not template.endswith("{object}") or "{subject}" not in template:
                raise ValueError(f"bad template for {name}: {template!r}")


class World:
    """The facts, their relations, templates and question templates. Treat it as read-only."""

    def __init__(self, facts: list[Fact], relations: dict[str, Relation],
                 templates: dict[str, dict[str, list[str]]], questions: dict[str, list[str]]):
        order = {name: i for i, name in enumerate(relations)}
        self.facts = sorted(facts, key=lambda f: (order[f.relation], f.subject))
        self.relations = relations
        self.templates = templates
        self.questions = questions
        self._index = {(f.subject, f.relation): f for f in self.facts}
        self._by_subject: dict[str, list[Fact]] = {}
        for f in self.facts:
            self._by_subject.setdefault(f.subject, []).append(f)

    def __repr__(self) -> str:
        return f"World({len(self.facts)} facts, {len(self.relations)} relations, {len(self._by_subject)} subjects)"

    def _check_relation(self, relation: str) -> None:
        if relation not in self.relations:
            raise KeyError(f"unknown relation {relation!r}; known: {', '.join(self.relations)}")

    def facts_of(self, relation: str | None = None, split: str | None = None) -> list[Fact]:
        """Facts of one relation and/or one split (None means all)."""
        if relation is not None:
            self._check_relation(relation)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return [f for f in self.facts if relation in (None, f.relation) and split in (None, f.split)]

    def subjects(self, relation: str | None = None) -> list[str]:
        """Distinct subjects, sorted."""
        return sorted({f.subject for f in self.facts_of(relation)})

    def objects(self, relation: str) -> list[str]:
        """Distinct objects of one relation, sorted."""
        return sorted({f.object for f in self.facts_of(relation)})

    def canonical(self, subject: str) -> str:
        """The subject as the facts spell it, matched without regard to case or surrounding spaces
        (``"fRANCE "`` -> ``"France"``). KeyError names the closest subjects when there is none."""
        if not isinstance(subject, str) or not subject.strip():
            raise KeyError("unknown subject: the subject is empty; type a country, region or element, "
                           "e.g. 'Peru'")
        if subject in self._by_subject:
            return subject
        folded = {s.casefold(): s for s in self._by_subject}
        key = subject.strip().casefold()
        if key in folded:
            return folded[key]
        close = [folded[c] for c in difflib.get_close_matches(key, list(folded), n=3)]
        hint = (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                "; subjects are countries, regions and chemical elements (World.subjects() lists them)")
        raise KeyError(f"unknown subject {subject!r}{hint}")

    def about(self, subject: str) -> list[Fact]:
        """All facts about one subject (its name matched without regard to case)."""
        return list(self._by_subject[self.canonical(subject)])

    def lookup(self, subject: str, relation: str) -> Fact:
        """The fact (subject, relation, ?); KeyError says what went wrong."""
        self._check_relation(relation)
        subject = self.canonical(subject)
        facts = self.about(subject)
        if (subject, relation) not in self._index:
            known = ", ".join(f.relation for f in facts)
            raise KeyError(f"{subject!r} has no {relation!r} fact; its relations: {known}")
        return self._index[subject, relation]

    def _template(self, relation: str, template: str | int, split: str) -> str:
        self._check_relation(relation)
        if isinstance(template, str):
            return template
        return self.templates[relation][split][template]

    def prompt(self, subject: str, relation: str, template: str | int = 0, split: str = "train") -> str:
        """The template's text before the object: ``prompt("Peru", "capital")`` -> "The capital of Peru is"."""
        text = self._template(relation, template, split)
        return fill(text[: text.index("{object}")], subject).strip()

    def sentence(self, fact: Fact, template: str | int = 0, split: str = "train") -> str:
        """A full sentence with a final full stop: "The capital of Peru is Lima."."""
        return fill(self._template(fact.relation, template, split), fact.subject, fact.object) + "."

    def question(self, subject: str, relation: str, i: int = 0) -> str:
        """Question template ``i`` of the relation, filled: "What is the capital of Peru?"."""
        self._check_relation(relation)
        return fill(self.questions[relation][i], subject)

    def edit_requests(self, n: int, seed: int = 0, relations: list[str] | None = None,
                      n_neighbours: int = 10) -> list[EditRequest]:
        """``n`` edit requests on train facts of distinct subjects, the same for the same seed.

        The new target is another object of the same relation. Neighbourhood prompts come first
        from other subjects that share the true object (as in CounterFact), then from the rest;
        they never name a subject edited by another request of the batch, so that the
        neighbourhood stays out of scope when all the requests are applied together (MEMIT,
        sequential editing).
        """
        names = list(self.relations) if relations is None else list(relations)
        for name in names:
            self._check_relation(name)
        usable = [r for r in names if len(self.objects(r)) >= 2]
        pool = [f for f in self.facts if f.relation in usable and f.split == "train"]
        possible = len({f.subject for f in pool})
        if n < 0 or n > possible:
            raise ValueError(f"asked for {n} edit requests, but only {possible} distinct subjects have "
                             f"train facts in the relations {usable} (relations with < 2 objects are skipped)")
        rng = random.Random(seed)
        rng.shuffle(pool)
        chosen: list[Fact] = []
        seen: set[str] = set()
        for f in pool:
            if len(chosen) == n:
                break
            if f.subject not in seen:
                seen.add(f.subject)
                chosen.append(f)
        return [self._edit_request(f, rng, n_neighbours, exclude=seen) for f in chosen]

    def edit_request(self, subject: str, relation: str, target_new: str, n_neighbours: int = 10,
                     seed: int = 0) -> EditRequest:
        """A request to make the model say ``target_new`` for (subject, relation). Raises KeyError
        for an unknown subject or relation and ValueError when nothing would change."""
        fact = self.lookup(subject, relation)
        if not target_new or not target_new.strip():
            raise ValueError("The new object is empty: type what the model should say instead.")
        if target_new.strip() == fact.object:
            raise ValueError(f"{subject!r} already has {relation} {fact.object!r}: choose a different new object.")
        return self._edit_request(fact, random.Random(seed), n_neighbours, target_new.strip())

    def edit_request_for(self, fact: Fact, n_neighbours: int = 10, seed: int = 0,
                         exclude: set[str] | frozenset[str] = frozenset()) -> EditRequest:
        """The prompts of a request about ``fact`` (edit prompt, paraphrases, neighbourhood without
        the subjects in ``exclude``, the subject's other train facts), with ``target_true`` and
        ``target_new`` both its object, for the caller to set (the arena's *add* job)."""
        return self._edit_request(fact, random.Random(seed), n_neighbours, fact.object, exclude=set(exclude))

    def _edit_request(self, fact: Fact, rng: random.Random, n_neighbours: int,
                      target_new: str | None = None, exclude: set[str] = frozenset()) -> EditRequest:
        rel = fact.relation
        if target_new is None:
            target_new = rng.choice([o for o in self.objects(rel) if o != fact.object])
        others = [f for f in self.facts_of(rel, "train") if f.subject != fact.subject and f.subject not in exclude]
        same_object = [f for f in others if f.object == fact.object]
        rest = [f for f in others if f.object != fact.object]
        rng.shuffle(same_object)
        rng.shuffle(rest)
        neighbours = (same_object + rest)[:n_neighbours]
        return EditRequest(
            subject=fact.subject, relation=rel,
            prompt=self.prompt(fact.subject, rel),
            target_true=fact.object, target_new=target_new,
            paraphrase_prompts=tuple(self.prompt(fact.subject, rel, i, "heldout")
                                     for i in range(len(self.templates[rel]["heldout"]))),
            neighbourhood=tuple((self.prompt(f.subject, rel), f.object) for f in neighbours),
            same_subject=tuple((self.prompt(f.subject, f.relation), f.object) for f in self.about(fact.subject)
                               if f.relation != rel and f.split == "train"),
        )

    # Edit requests grade an edit with train template 0 (the edit prompt, its neighbourhood and
    # the subject's other facts) and with the held-out templates (paraphrases). Editors that
    # need prompts of their own (ROME's same-subject KL anchors, the generic facts knowledge
    # neurons are filtered against) take them from a different train template, so that no
    # editor is fitted on a prompt it is then scored on.
    UNSCORED_TEMPLATE = 1

    def anchor_prompts(self, subject: str, relation: str) -> list[str]:
        """Prompts of ``subject``'s other train facts under train template 1, which no edit
        request scores (the same-subject metric uses template 0). Empty for a subject that is
        not in the world."""
        return [self.prompt(f.subject, f.relation, self.UNSCORED_TEMPLATE) for f in self.about(subject)
                if f.relation != relation and f.split == "train"] if subject in self._by_subject else []

    def generic_prompts(self, n: int, seed: int = 0, exclude: tuple[str, ...] | set[str] = ()
                        ) -> list[tuple[str, str, str]]:
        """``n`` (prompt, subject, object) train facts drawn with ``seed``, of subjects not in
        ``exclude``, under train template 1 (never scored by an edit request): unrelated facts
        for an editor to contrast its own fact with."""
        order = list(self.facts_of(split="train"))
        random.Random(seed).shuffle(order)  # one order per seed: excluding a subject keeps the rest
        excluded = set(exclude)
        chosen = [f for f in order if f.subject not in excluded][:n]
        return [(self.prompt(f.subject, f.relation, self.UNSCORED_TEMPLATE), f.subject, f.object) for f in chosen]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per relation: number of facts, train, heldout, distinct subjects and objects."""
        out = {}
        for name in self.relations:
            facts = self.facts_of(name)
            out[name] = {"facts": len(facts), "train": sum(f.split == "train" for f in facts),
                         "heldout": sum(f.split == "heldout" for f in facts),
                         "subjects": len({f.subject for f in facts}), "objects": len({f.object for f in facts})}
        return out


@functools.lru_cache(maxsize=None)
def load() -> World:
    """Build the World from the shipped tables (cached; ``load.cache_clear()`` rebuilds)."""
    country_names = {row["alpha2"]: row["name"] for row in _read_csv("world_countries.csv")}
    triples = _country_triples() + _element_triples() + _region_triples(country_names)
    facts = [Fact(s, r, o, split_of(s, r)) for s, r, o in triples]
    _check(facts)
    return World(facts, {r.name: r for r in RELATIONS},
                 {k: {s: list(v) for s, v in t.items()} for k, t in TEMPLATES.items()},
                 {k: list(v) for k, v in QUESTIONS.items()})


def recall(model, tokenizer: Tokenizer, facts: list[Fact], templates: str = "train", context: bool = False,
           world: World | None = None) -> float:
    """Exact-match rate of ``facts`` under every template of a split ("train" or "heldout").

    A fact counts for a template when greedy decoding of the prompt gives the whole object
    (multi-token objects included). ``context=True`` first states the fact (train template 0),
    which measures copying from the context rather than memory.
    """
    from lfmlab.core.lm import exact_match

    w = world or load()
    prompts, targets = [], []
    for f in facts:
        for t in w.templates[f.relation][templates]:
            prompt = w.prompt(f.subject, f.relation, t)
            prompts.append(f"{w.sentence(f, 0)} {prompt}" if context else prompt)
            targets.append(f.object)
    return exact_match(model, tokenizer, prompts, targets)
