"""The relations of :mod:`lfmlab.data.world`: what each one means, where its facts come from, and
the templates that phrase it (train templates for pretraining, held-out ones for paraphrase tests)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Relation", "RELATIONS", "TEMPLATES", "QUESTIONS"]


@dataclass(frozen=True)
class Relation:
    """What a relation means, what its subjects are (country|region|element), where it comes from."""

    name: str
    description: str
    subject_kind: str
    source: str



_CSV_SOURCE = "world_countries.csv, compiled by hand from the CIA World Factbook and Wikipedia"
RELATIONS: tuple[Relation, ...] = (
    Relation("capital", "country -> its capital city", "country", _CSV_SOURCE),
    Relation("continent", "country -> its continent (UN M49)", "country", _CSV_SOURCE),
    Relation("language", "country -> its main official language", "country", _CSV_SOURCE),
    Relation("currency", "country -> the name of its currency", "country", "ISO 4217 names via pycountry"),
    Relation("currency_code", "country -> its ISO 4217 currency code", "country", "world_countries.csv (ISO 4217)"),
    Relation("iso_code", "country -> its ISO 3166-1 alpha-3 code", "country", "ISO 3166-1 via pycountry"),
    Relation("region_country", "region (state, province) -> its country", "region", "ISO 3166-2 via pycountry"),
    Relation("element_symbol", "chemical element -> its symbol", "element", "world_elements.csv (IUPAC)"),
)

# Every template ends with "{object}"; "{subject}'s" becomes "Texas'" for names ending in s.
# Held-out templates never appear in pretraining: they are new combinations of words and
# structures that pretraining does contain ("In {subject}, the capital city is" joins the
# language relation's "In {subject}, the ... is" with "capital city"). A word the model has never seen has an
# untrained embedding, so a paraphrase made of unseen words would test noise, not
# generalisation; tests check that every held-out word occurs in some train template, and
# that no held-out prompt is a prefix of another relation's train phrasing.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "capital": {
        "train": [
            "The capital of {subject} is {object}",
            "{subject}'s capital is {object}",
            "The capital city of {subject} is {object}",
            "{subject} has its capital in {object}",
        ],
        "heldout": [
            "In {subject}, the capital city is {object}",
            "The capital of the country {subject} is {object}",
            "The capital city that {subject} has is {object}",
        ],
    },
    "continent": {
        "train": [
            "{subject} is a country in {object}",
            "{subject} is located in {object}",
            "The continent of {subject} is {object}",
            "{subject} lies on the continent of {object}",
        ],
        "heldout": [
            "{subject} is a country located in {object}",
            "The continent of the country {subject} is {object}",
            "{subject} is located on the continent of {object}",
        ],
    },
    "language": {
        "train": [
            "The official language of {subject} is {object}",
            "{subject}'s official language is {object}",
            "In {subject}, the official language is {object}",
            "{subject} has the official language {object}",
        ],
        "heldout": ["The official language in {subject} is {object}", "The language of {subject} is {object}"],
    },
    "currency": {
        "train": [
            "The currency of {subject} is {object}",
            "{subject}'s currency is {object}",
            "The official currency of {subject} is called {object}",
            "{subject} uses the currency called {object}",
        ],
        "heldout": ["In {subject}, the currency is called {object}", "The currency that {subject} uses is {object}"],
    },
    "currency_code": {
        "train": [
            "The currency code of {subject} is {object}",
            "{subject}'s currency code is {object}",
            "The ISO 4217 code for the currency of {subject} is {object}",
            "{subject} uses the currency code {object}",
        ],
        "heldout": ["In {subject}, the currency code is {object}", "The code of the currency of {subject} is {object}"],
    },
    "iso_code": {
        "train": [
            "The ISO country code of {subject} is {object}",
            "{subject}'s three-letter country code is {object}",
            "The ISO 3166 alpha-3 code of {subject} is {object}",
            "{subject} has the country code {object}",
        ],
        "heldout": [
            "The country code of {subject} is {object}",
            "{subject} has the three-letter country code {object}",
        ],
    },
    "region_country": {
        "train": [
            "{subject} is a region of {object}",
            "The region of {subject} belongs to {object}",
            "The country that contains {subject} is {object}",
            "{subject} is an administrative region in {object}",
        ],
        "heldout": ["{subject} is a region in {object}", "The country of the region {subject} is {object}"],
    },
    "element_symbol": {
        "train": [
            "The chemical symbol of {subject} is {object}",
            "{subject}'s chemical symbol is {object}",
            "The symbol for the element {subject} is {object}",
            "{subject} has the chemical symbol {object}",
        ],
        "heldout": ["The symbol of the element {subject} is {object}", "{subject} has the symbol {object}"],
    },
}

QUESTIONS: dict[str, list[str]] = {
    "capital": ["What is the capital of {subject}?", "Which city is the capital of {subject}?",
                "What is {subject}'s capital city?"],
    "continent": ["On which continent is {subject}?", "Which continent is {subject} in?"],
    "language": ["What is the official language of {subject}?", "Which language is official in {subject}?"],
    "currency": ["What is the currency of {subject}?", "Which currency is used in {subject}?"],
    "currency_code": ["What is the currency code of {subject}?",
                      "Which ISO 4217 code does the currency of {subject} have?"],
    "iso_code": ["What is the ISO alpha-3 code of {subject}?", "Which three-letter code stands for {subject}?"],
    "region_country": ["Which country is {subject} in?", "In which country is {subject}?"],
    "element_symbol": ["What is the chemical symbol of {subject}?", "Which symbol stands for {subject}?"],
}
