"""`parley eval`: the golden-set format, the scorer's matching, the figures, the report, and
one small evaluation end to end through the bundled model."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from bot.app.cli import main
from bot.config import DecisionConfig, load_config
from bot.errors import ConfigError
from bot.evaluation.golden import GoldenItem, Turn, parse_golden
from bot.evaluation.report import write_html
from bot.evaluation.run import Result
from bot.evaluation.score import figures, parse_floors, short_of, verdict
from bot.knowledge.claims import Evidence, has_fact, specifics, unsupported
from bot.knowledge.index import Source
from bot.knowledge.scope import Signals
from tests.conftest import MODEL_CACHE

ROOT = Path(__file__).resolve().parents[1]

# -- the golden set ------------------------------------------------------------------------------


def test_golden_lines_are_read_with_accepted_forms_history_and_out_of_scope() -> None:
    items = parse_golden(
        "# a comment\n\n"
        '{"question": "how much?", "document": "plans.md", "facts": [["€12", "12 euros"], "a"]}\n'
        '{"question": "and then?", "history": ["first", {"role": "assistant", "content": "ok"}],'
        ' "document": "plans.md"}\n'
        '{"question": "who is your CEO?", "out_of_scope": true}\n'
    )
    assert [i.line for i in items] == [3, 4, 5]
    assert items[0].facts == (("€12", "12 euros"), ("a",))
    assert items[1].history == (Turn("user", "first"), Turn("assistant", "ok"))
    assert items[2].out_of_scope and not items[2].document


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("{not json", "not JSON"),
        ('{"question": "", "document": "a.md"}', "'question' must be a non-empty string"),
        ('{"question": "q"}', "give the 'document'"),
        ('{"question": "q", "document": "a.md", "fact": "x"}', "unknown key(s) fact"),
        ('{"question": "q", "document": "a.md", "facts": "x"}', "'facts' must be a list"),
        ('{"question": "q", "document": "a.md", "facts": [[]]}', "accepted forms is empty"),
        ('{"question": "q", "out_of_scope": true, "document": "a.md"}', "has no 'document'"),
        ('{"question": "q", "out_of_scope": "yes"}', "true or false"),
        ('{"question": "q", "document": "a.md", "history": [{"role": "bot"}]}', "a turn is"),
        ('["q"]', "expected a JSON object"),
    ],
)
def test_a_bad_golden_line_is_reported_with_its_number(line: str, complaint: str) -> None:
    good = '{"question": "fine", "out_of_scope": true}\n'
    with pytest.raises(ConfigError) as caught:
        parse_golden(good + line + "\n", "golden.jsonl")
    assert str(caught.value).startswith("golden.jsonl:2: ")
    assert complaint in str(caught.value)


def test_an_empty_golden_set_is_refused() -> None:
    with pytest.raises(ConfigError, match="no questions"):
        parse_golden("# only a comment\n")


def test_the_shipped_golden_sets_are_valid_and_name_articles_that_exist() -> None:
    for golden, articles in (
        ("config/eval/sample.jsonl", "config/knowledge"),
        ("config/eval/heldout.jsonl", "config/eval/heldout"),
    ):
        items = parse_golden((ROOT / golden).read_text(encoding="utf-8"), golden)
        answerable = [i for i in items if not i.out_of_scope]
        assert len(answerable) >= 40 and len(items) - len(answerable) >= 12
        assert any(i.history for i in answerable)
        names = {p.name for p in (ROOT / articles).glob("*.md")}
        text = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / articles).glob("*.md")}
        for item in answerable:
            assert item.document in names, f"{golden}:{item.line}"
            # Every fact is in its article in one of its accepted forms: a fact no article
            # holds would count against every answer.
            for forms in item.facts:
                assert has_fact(text[item.document], forms), f"{golden}:{item.line}: {forms}"


# -- the fact matcher ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "forms"),
    [
        ("It costs 12 € a month.", ["€12"]),
        ("It costs 12 EUR a month.", ["€12"]),
        ("It costs twelve, i.e. 12 euros.", ["€12"]),
        ("You can store 1000 files.", ["1,000 files"]),
        ("You can store 1,000 files.", ["1000 files"]),
        ("That is $10.00 a month", ["$10 a month"]),
        ("REFUNDED IN FULL   within 30\ndays!", ["refunded in full within 30 days"]),
        ("Open Settings > Security > Two-step verification.", ["Settings → Security → Two-step"]),
        ("It lasts thirty days.", ["30 days", "thirty days"]),
        ("Doors open at 9am.", ["9:00 a.m."]),
        ("Save 15 per cent on renewals.", ["15%"]),
        ("Click “Forgot password?” on the sign-in page", ['"Forgot password?"']),
    ],
)
def test_a_fact_is_found_whatever_its_format(answer: str, forms: list[str]) -> None:
    assert has_fact(answer, forms)


@pytest.mark.parametrize(
    ("answer", "forms"),
    [
        ("It costs €120 a month.", ["€12"]),  # a number is a whole number
        ("It costs $12 a month.", ["€12"]),  # another currency is another price
        ("It lasts thirty days.", ["30 days"]),  # number words only where the line lists them
        ("Refunds take 30 days to arrive.", ["refunded in full within 30 days"]),
        ("", ["anything"]),
    ],
)
def test_a_fact_is_not_found_in_an_answer_that_lacks_it(answer: str, forms: list[str]) -> None:
    assert not has_fact(answer, forms)


# -- the unsupported-specific detector ----------------------------------------------------------

ARTICLE = (
    "The cargo bike carries up to 180 kg, rider included. Our phone line is open 24/7 on "
    "0800 123 4567. Forgot your password? Choose 'Forgot password?' on the sign-in page. "
    "Plans cost €12 a month; see https://help.example.com/plans or write to help@example.com. "
    "Families save 20%."
)


def test_an_invented_number_is_flagged_when_the_article_says_otherwise() -> None:
    found = unsupported(
        "The weight limit for a cargo bike is 10,256 kilograms.", Evidence([ARTICLE])
    )
    assert [s.text for s in found] == ["10,256 kilograms"]
    assert unsupported("It carries 180 kilograms, you included.", Evidence([ARTICLE])) == []


def test_specifics_the_article_holds_are_not_flagged() -> None:
    answer = (
        'Call us 24/7 on +44 800 123 4567, click "Forgot password?", or see '
        "help.example.com/plans/ (help@example.com). Plans are 12 EUR; families save 20 %."
    )
    assert specifics(answer)  # there are specifics, and every one is supported
    assert unsupported(answer, Evidence([ARTICLE])) == []


def test_invented_links_addresses_phones_amounts_percentages_and_labels_are_flagged() -> None:
    answer = (
        "Visit https://www.acme-bikes.com/weight, mail sales@acme.com, call 555-019-9123, pay "
        '$15 (a 25% discount) and click "Reset Password".'
    )
    kinds = {s.kind: s.text for s in unsupported(answer, Evidence([ARTICLE]))}
    assert kinds == {
        "url": "https://www.acme-bikes.com/weight",
        "email": "sales@acme.com",
        "phone": "555-019-9123",
        "amount": "$15",
        "percentage": "25%",
        "label": "Reset Password",
    }


def test_a_number_the_customer_wrote_is_not_flagged() -> None:
    question = "I'm 95 kg and my kid is 30 kg, can we both ride?"
    answer = "Together you weigh 95 kg and 30 kg, which is within the 180 kg limit."
    assert unsupported(answer, Evidence([ARTICLE])) != []
    assert unsupported(answer, Evidence([ARTICLE]).plus([question])) == []


def test_year_ranges_and_trailing_commas_are_numbers() -> None:
    found = specifics("From 2019-2023, and in 2028,\n2) call 0845 796 6790 from 9.00 - 17.30.")
    assert [(s.kind, s.text) for s in found] == [
        ("number", "2019"),
        ("number", "2023"),
        ("number", "2028"),
        ("phone", "0845 796 6790"),
        ("number", "9.00"),
        ("number", "17.30"),
    ]


def test_list_markers_and_citation_marks_are_not_specifics() -> None:
    answer = "1. Open the app [1]\n2. Tap Settings\n3) Choose Security [2]"
    assert specifics(answer) == []


# -- figures, verdicts, floors and the page -----------------------------------------------------

PLANS = Source("Plans and prices", "config/knowledge/plans.md")
OTHER = Source("Shipping", "config/knowledge/shipping.md")


def result(
    item: GoldenItem,
    answer: str,
    outcome: str = "answered",
    sources: tuple[Source, ...] = (PLANS,),
    retrieved: tuple[Source, ...] = (PLANS,),
    evidence: Evidence | None = None,
) -> Result:
    found = unsupported(answer, evidence or Evidence([ARTICLE]))
    return Result(item, answer, outcome, sources, retrieved, tuple(found), 1.0, 2.0)


def test_figures_count_what_a_customer_would_notice() -> None:
    plans = GoldenItem(1, "how much?", "plans.md", (("€12",),))
    ceo = GoldenItem(2, "who is your ceo?", out_of_scope=True)
    results = [
        result(plans, "It is €12 a month.\n\nSources:\n- Plans and prices (plans.md)"),
        result(plans, "It is €99 a month.", sources=(OTHER,), retrieved=(OTHER, OTHER, PLANS)),
        result(plans, "I don't know.", outcome="dont_know", sources=()),
        result(ceo, "I don't know.", outcome="handed_off", sources=()),
        result(ceo, "Our CEO since 2013 is Jane.", sources=()),
    ]
    found = figures(results)
    assert (found.answerable, found.out_of_scope) == (3, 2)
    assert found.hit_at_1 == pytest.approx(2 / 3)
    assert found.hit_at_3 == 1.0
    assert found.cited == pytest.approx(1 / 3)  # the wrong source, and a refusal lists none
    assert found.fact == pytest.approx(1 / 3)
    assert found.unsupported == pytest.approx(2 / 5)  # €99 and 2013
    assert found.dont_know_recall == 0.5
    assert found.refused == pytest.approx(1 / 3)
    assert found.dont_know_precision == 0.5
    assert verdict(results[0]) == (True, "facts found, right document cited")
    ok, why = verdict(results[1])
    assert not ok and "€99 (amount)" in why and "did not cite plans.md" in why
    assert verdict(results[3])[0]
    assert "answered a question the articles do not answer" in verdict(results[4])[1]


def test_floors_name_what_falls_short() -> None:
    plans = GoldenItem(1, "how much?", "plans.md", (("€12",),))
    found = figures([result(plans, "It is €99.")])
    floors = parse_floors("fact=0.6, unsupported=0.05,cited=0.5")
    assert short_of(found, floors) == [
        "fact 0.00 is below 0.60",
        "unsupported 1.00 is above 0.05",
    ]
    with pytest.raises(ConfigError, match="unknown figure 'facts'"):
        parse_floors("facts=0.6")
    with pytest.raises(ConfigError, match="needs a number"):
        parse_floors("fact=most")


def test_the_page_is_self_contained_escaped_and_lists_failures_first(tmp_path: Path) -> None:
    plans = GoldenItem(1, "how much?", "plans.md", (("€12",),))
    bad = GoldenItem(2, "<b>how much</b>?", "plans.md", (("€12",),))
    results = [
        result(plans, "It is €12."),
        result(bad, "It is €99. <img src=x onerror=alert(1)>"),
    ]
    page = tmp_path / "eval.html"
    write_html(page, results, figures(results), {"golden": "g.jsonl"})
    text = page.read_text(encoding="utf-8")
    assert "<img" not in text and "&lt;img src=x" in text
    assert "<mark>€99</mark>" in text
    assert text.index("&lt;b&gt;how much") < text.index("<td>how much?</td>")
    # No external assets: nothing to load, so the page opens anywhere, offline.
    assert "<script" not in text and "<link" not in text and 'src="' not in text


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.bundled
def test_parley_eval_runs_golden_lines_through_the_bundled_model(
    tmp_path: Path, bundled_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        '{"question": "how do i reset my password?", "document": "resetting-your-password.md",'
        ' "facts": ["Forgot password?"]}\n'
        '{"question": "and how long does the link work?", "history": ["i forgot my password"],'
        ' "document": "resetting-your-password.md"}\n'
        '{"question": "write me a poem about the sea", "out_of_scope": true}\n'
    )
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[model]\ncache_dir = "{MODEL_CACHE}"\ntemperature = 0\nmax_new_tokens = 24\n'
        f'[store]\npath = "{tmp_path / "live.db"}"\n'
    )
    out = tmp_path / "report"
    argv = ["eval", str(golden), "--config", str(config), "--out", str(out)]
    argv += ["--kb", str(ROOT / "config" / "knowledge"), "--min", "fact=1.01"]
    assert main(argv) == 1  # no answer can reach a floor above 1
    printed = capsys.readouterr()
    assert "fact in answer" in printed.out and "hit@3" in printed.out
    assert "parley eval: fact" in printed.err and "is below 1.01" in printed.err
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert set(report["figures"]) >= {"hit_at_1", "cited", "fact", "unsupported", "answer_p95"}
    rows = report["questions"]
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert rows[1]["history"] == [{"role": "user", "content": "i forgot my password"}]
    for row in rows:
        assert row["answer"].strip() and row["outcome"] in {"answered", "dont_know", "handed_off"}
        assert 0 < row["first_text_s"] <= row["answer_s"]
    # The right article is retrieved for the plain question, and the live store is untouched.
    assert rows[0]["retrieved"][0].endswith("resetting-your-password.md")
    assert not (tmp_path / "live.db").exists()
    page = (out / "eval.html").read_text(encoding="utf-8")
    assert page.count("<tr class=") == 3


# -- the answer path's floors, on both golden sets ----------------------------------------------

#: The floors for the default answer path on every question of both sets: of the grounded-answer
#: issue (#37), and of the don't-know's (#38: out of scope caught, answerable refused).
FLOORS = {
    "fact": 0.60,
    "unsupported": 0.02,
    "cited": 0.80,
    "hit_at_1": 0.75,
    "dont_know_recall": 0.80,
    "refused": 0.15,
}


@pytest.mark.bundled
@pytest.mark.parametrize("name", ["sample", "heldout"])
async def test_the_default_answer_path_reaches_the_floors(
    name: str, bundled_dir: Path, tmp_path: Path
) -> None:
    from bot.config import ModelConfig, load_config
    from bot.evaluation.run import evaluate

    toml = ROOT / "config" / "eval" / "heldout.toml" if name == "heldout" else None
    config = load_config(toml)
    config = dataclasses.replace(
        config, model=ModelConfig(name="bundled", cache_dir=str(MODEL_CACHE), temperature=0)
    )
    kb = [str(ROOT / path) for path in config.knowledge.paths]
    items = parse_golden((ROOT / "config" / "eval" / f"{name}.jsonl").read_text(encoding="utf-8"))
    found = figures(await evaluate(config, items, kb, concurrency=16))
    assert short_of(found, FLOORS) == []


# -- --tune ---------------------------------------------------------------------------------------


def _signals(out_of_scope: bool, similarity: float, off_topic: float, covered: float) -> Result:
    item = GoldenItem(1, "q", out_of_scope=True) if out_of_scope else GoldenItem(1, "q", "a.md")
    signals = Signals(similarity, off_topic, "write me a poem", "a task", covered)
    return Result(item, "", "answered", (), (), (), 1.0, 1.0, signals)


def test_tune_fits_a_decision_over_the_signals_that_separates_the_two_kinds(tmp_path: Path) -> None:
    from bot.evaluation.tune import cross_validate, refusals, tune

    # Answerable: close to the articles, the words found. Out of scope: closer to an off-topic
    # example than to the articles; or as close to them as many an answerable one, but with
    # little of its words in what was found (no similarity threshold alone would do).
    results = [_signals(False, 0.40 + n / 100, 0.2, 0.5 + n / 50) for n in range(20)]
    results += [_signals(True, 0.55 + n / 100, 0.7, 0.5) for n in range(5)]
    results += [_signals(True, 0.45 + n / 100, 0.3, 0.0) for n in range(5)]
    tuning = tune(results, min_score=0.2, max_refused=0.0)
    assert tuning is not None
    assert (tuning.dont_know_recall, tuning.refused) == (1.0, 0.0)
    assert refusals(results, tuning.decision, 0.2) == (1.0, 0.0)
    assert tuning.decision.margin > 0 and tuning.decision.coverage > 0
    # The default decision, or a min_score set too high, gets some of them wrong.
    assert refusals(results, DecisionConfig(), 0.2) != (1.0, 0.0)
    assert refusals(results, tuning.decision, 0.5)[1] > 0.4
    assert tuning.config_lines().startswith("[knowledge.decision]\nsimilarity = ")
    (tmp_path / "tuned.toml").write_text(tuning.config_lines())
    assert load_config(tmp_path / "tuned.toml").knowledge.decision == tuning.decision
    assert cross_validate(results, 0.2, max_refused=0.0) == (1.0, 0.0)
    assert tune(results[:20], 0.2) is None  # nothing out of scope to tune on


@pytest.mark.bundled
def test_tune_mends_a_mis_set_threshold_on_the_sample_set(
    tmp_path: Path, bundled_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = parse_golden((ROOT / "config" / "eval" / "sample.jsonl").read_text(encoding="utf-8"))
    inside = [i for i in items if not i.out_of_scope][:24]
    outside = [i for i in items if i.out_of_scope][:12]
    golden = tmp_path / "golden.jsonl"
    lines = (ROOT / "config" / "eval" / "sample.jsonl").read_text(encoding="utf-8").splitlines()
    golden.write_text("\n".join(lines[i.line - 1] for i in [*inside, *outside]) + "\n")
    config = tmp_path / "parley.toml"
    config.write_text(f'[model]\ncache_dir = "{MODEL_CACHE}"\n[knowledge.decision]\nbias = -3.0\n')
    argv = ["eval", str(golden), "--config", str(config), "--out", str(tmp_path / "r"), "--tune"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    now = re.search(
        r"caught ([\d.]+), answerable refused ([\d.]+)\. Fitted: caught ([\d.]+),"
        r" refused (\d\.\d\d)",
        out,
    )
    assert now is not None, out
    caught, refused, tuned_caught, tuned_refused = map(float, now.groups())
    assert refused >= 0.4  # a bias of -3 refuses about half the answerable questions
    assert tuned_refused <= 0.10 and tuned_caught - tuned_refused > caught - refused
    assert re.search(r"\[knowledge\.decision\]\nsimilarity = -?\d+\.\d\d\nmargin = ", out)
