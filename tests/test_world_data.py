"""Tests for lfmlab.data.world: the real-world facts dataset (pure Python, fast)."""
from __future__ import annotations

import pytest

from lfmlab.data import world


@pytest.fixture(scope="module")
def w() -> world.World:
    return world.load()


def test_size_and_relations(w):
    assert len(w.relations) >= 8
    assert len(w.facts) >= 1000
    assert set(world.TEMPLATES) == set(w.relations) == set(w.questions)
    counts = w.summary()
    assert sum(c["facts"] for c in counts.values()) == len(w.facts)
    assert counts["capital"]["subjects"] == 195  # 193 UN members + 2 observers
    assert counts["element_symbol"]["facts"] == 118
    assert 150 <= counts["region_country"]["facts"] <= 250
    assert counts["continent"]["objects"] == 6


def test_every_relation_has_both_splits(w):
    for name, c in w.summary().items():
        assert c["train"] > 0 and c["heldout"] > 0, name
        assert 0.05 <= c["heldout"] / c["facts"] <= 0.20, (name, c)
    for f in w.facts:
        assert f.split == world.split_of(f.subject, f.relation)


def test_names_are_clean_ascii(w):
    for f in w.facts:
        for text in (f.subject, f.object):
            assert text.isascii() and text == text.strip() and text, f
            assert not any(c in text for c in ",()[]"), f


def test_subjects_unique_across_kinds(w):
    kind: dict[str, str] = {}
    for f in w.facts:
        k = w.relations[f.relation].subject_kind
        assert kind.setdefault(f.subject, k) == k, f
    pairs = [(f.subject, f.relation) for f in w.facts]
    assert len(pairs) == len(set(pairs))
    assert "Georgia" not in w.subjects("region_country")  # the US state clashes with the country
    assert "Punjab" not in w.subjects()  # India and Pakistan both have one


def test_templates(w):
    for name, t in w.templates.items():
        assert len(t["train"]) >= 4 and len(t["heldout"]) >= 2, name
        assert not set(t["train"]) & set(t["heldout"]), name
        for template in t["train"] + t["heldout"]:
            assert "{subject}" in template and template.endswith("{object}"), template
        assert any(x.startswith("{subject}") for x in t["train"]), name  # subject-first phrasing
        assert any(not x.startswith("{subject}") for x in t["train"]), name  # relation-first phrasing
        assert 2 <= len(w.questions[name]) <= 3
        for q in w.questions[name]:
            assert "{subject}" in q and q.endswith("?")


@pytest.mark.parametrize("subject, relation, obj", [
    ("France", "capital", "Paris"),
    ("Peru", "continent", "South America"),
    ("Gold", "element_symbol", "Au"),
    ("Peru", "iso_code", "PER"),
    ("Japan", "currency_code", "JPY"),
    ("Peru", "currency", "Sol"),
    ("Germany", "currency", "Euro"),
    ("California", "region_country", "United States"),
    ("Colombia", "capital", "Bogota"),
    ("Russia", "continent", "Europe"),
    ("Egypt", "continent", "Africa"),
    ("Oganesson", "element_symbol", "Og"),
])
def test_known_facts(w, subject, relation, obj):
    assert w.lookup(subject, relation).object == obj


def test_lookup_errors(w):
    with pytest.raises(KeyError, match="Peru"):
        w.lookup("Peruu", "capital")  # suggests the close match
    with pytest.raises(KeyError, match="element_symbol"):
        w.lookup("Gold", "capital")  # lists the relations Gold has
    with pytest.raises(KeyError, match="unknown relation"):
        w.lookup("Peru", "anthem")


def test_prompts_and_sentences(w):
    assert w.prompt("Peru", "capital") == "The capital of Peru is"
    fact = w.lookup("Peru", "capital")
    assert w.sentence(fact) == "The capital of Peru is Lima."
    assert w.sentence(fact, 1) == "Peru's capital is Lima."
    assert w.prompt("Texas", "region_country", "{subject}'s country is {object}") == "Texas' country is"
    assert w.question("Peru", "capital") == "What is the capital of Peru?"
    for i in range(len(w.templates["capital"]["heldout"])):
        assert "Peru" in w.prompt("Peru", "capital", i, "heldout")
    assert {f.relation for f in w.about("Peru")} == {"capital", "continent", "language", "currency",
                                                     "currency_code", "iso_code"}


def test_facts_of_and_objects(w):
    assert len(w.facts_of("capital", "heldout")) == w.summary()["capital"]["heldout"]
    assert w.objects("continent") == sorted(w.objects("continent"))
    assert "Europe" in w.objects("continent")
    with pytest.raises(ValueError):
        w.facts_of(split="test")


def test_edit_requests(w):
    reqs = w.edit_requests(40, seed=3)
    assert reqs == w.edit_requests(40, seed=3)
    assert reqs != w.edit_requests(40, seed=4)
    assert len({r.subject for r in reqs}) == 40
    for r in reqs:
        fact = w.lookup(r.subject, r.relation)
        assert fact.split == "train" and fact.object == r.target_true
        assert r.target_new != r.target_true and r.target_new in w.objects(r.relation)
        assert r.prompt == w.prompt(r.subject, r.relation)
        assert len(r.paraphrase_prompts) == len(w.templates[r.relation]["heldout"])
        assert len(r.neighbourhood) == 10
        for prompt, obj in r.neighbourhood:
            others = [f for f in w.facts_of(r.relation, "train")
                      if f.subject != r.subject and w.prompt(f.subject, r.relation) == prompt]
            assert len(others) == 1 and others[0].object == obj
        for prompt, obj in r.same_subject:
            assert r.subject in prompt and prompt != r.prompt
        same = [f for f in w.about(r.subject) if f.relation != r.relation and f.split == "train"]
        assert len(r.same_subject) == len(same)


def test_edit_requests_limits(w):
    reqs = w.edit_requests(5, seed=0, relations=["capital"], n_neighbours=3)
    assert all(r.relation == "capital" and len(r.neighbourhood) == 3 for r in reqs)
    assert w.edit_requests(0) == []
    with pytest.raises(ValueError, match="distinct subjects"):
        w.edit_requests(10_000)
    with pytest.raises(ValueError, match="distinct subjects"):
        w.edit_requests(200, relations=["element_symbol"])


def test_load_is_deterministic_and_cached():
    first = world.load()
    assert world.load() is first
    world.load.cache_clear()
    second = world.load()
    assert second is not first and second.facts == first.facts


def test_neighbourhood_prefers_subjects_sharing_the_true_object(w):
    for r in w.edit_requests(5, seed=1, relations=["continent"]):
        sharing = [f for f in w.facts_of("continent", "train") if f.object == r.target_true and f.subject != r.subject]
        k = min(len(sharing), len(r.neighbourhood))
        assert k > 0 and all(obj == r.target_true for _, obj in r.neighbourhood[:k])


def test_module_is_pure_python():
    assert "torch" not in open(world.__file__).read()


def test_shipped_tables_agree_with_pycountry():
    """The pycountry-derived columns are a snapshot (see lfmlab.data.world_tables); ISO codes
    never change, so they must still agree with the installed pycountry."""
    import pycountry

    from lfmlab.data.world import _read_csv

    for row in _read_csv("world_countries.csv"):
        country = pycountry.countries.get(alpha_2=row["alpha2"])
        assert country is not None and country.alpha_3 == row["iso_code"], row
    for row in _read_csv("world_regions.csv"):
        sub = pycountry.subdivisions.get(code=row["iso_3166_2"])
        assert sub is not None and sub.country_code == row["country_alpha2"], row


def _words(template: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z0-9'-]+", template.replace("{subject}", " ").replace("{object}", " ")))


def test_heldout_templates_recombine_words_seen_in_pretraining():
    w = world.load()
    seen = set().union(*(_words(t) for r in w.templates.values() for t in r["train"]))
    for rel, t in w.templates.items():
        for template in t["heldout"]:
            assert _words(template) <= seen, (rel, template, _words(template) - seen)


def test_heldout_prompts_are_new_and_unambiguous():
    w = world.load()
    train_prompts = {(rel, t[: t.index("{object}")].strip()) for rel, r in w.templates.items() for t in r["train"]}
    for rel, r in w.templates.items():
        for template in r["heldout"]:
            prompt = template[: template.index("{object}")].strip()
            assert (rel, prompt) not in train_prompts, template
            for other_rel, train_prompt in train_prompts:  # not the start of another relation's phrasing
                assert other_rel == rel or not train_prompt.startswith(prompt + " "), (template, train_prompt)


def test_editor_prompts_are_never_scored(w):
    """ROME's anchors and KN's unrelated facts use a template that no edit request grades."""
    for r in w.edit_requests(20, seed=2):
        scored = {r.prompt, *r.paraphrase_prompts, *(p for p, _ in r.neighbourhood),
                  *(p for p, _ in r.same_subject)}
        anchors = w.anchor_prompts(r.subject, r.relation)
        assert len(anchors) == len(r.same_subject) and not scored & set(anchors)
        generic = w.generic_prompts(5, seed=0, exclude={r.subject})
        assert len(generic) == 5 and all(s != r.subject for _, s, _ in generic)
        assert not scored & {p for p, _, _ in generic}
    assert w.anchor_prompts("Atlantis", "capital") == []
    # excluding a subject keeps the other draws: one seeded order
    full = w.generic_prompts(6, seed=1)
    assert [g for g in w.generic_prompts(6, seed=1, exclude={full[0][1]})][:5] == [
        g for g in full if g[1] != full[0][1]][:5]
