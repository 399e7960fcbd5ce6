"""The support team's console (bot/app/console) in a real headless Chromium: log in with the
token, read the overview drawn from a store seeded with known conversations, open a gap group;
a wrong token, a POST without its CSRF token and HTML in a stored question are refused or shown
as text. Without Chromium this fails (make test installs it), as the web chat's browser test."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from bench.process import ParleyProcess
from bot.app.console import ConsoleServer
from bot.app.console.overview import build_overview
from bot.config import AdminConfig, Config, KnowledgeConfig, StoreConfig
from bot.events import ConversationKey
from bot.knowledge.base import KnowledgeBase
from bot.knowledge.embed import Embedder
from bot.storage import build_store, sqlite_records
from bot.storage import sqlite as sqlite_module
from bot.storage.base import Snippet, Status, Store, Timing
from tests.fakes.inference import serving as inference
from tests.test_web_browser import ARTIFACTS, _driver

TOKEN = "console-token-for-tests"
EMAIL = "jane.doe@example.com"
HOSTILE = "<b>Where</b> is my invoice? <img src=x onerror=alert(1)>"
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TWO_DAYS_AGO = NOW - timedelta(days=2)
WEB = ConversationKey("web", "local", "visitor-1")
DISCORD = ConversationKey("discord", "g1", "c1", "t1")
SLACK = ConversationKey("slack", "T1", "C1", "1700000000.000100")

# (when, conversation, question, what became of it, the answer's message id)
SEEDED: list[tuple[datetime, ConversationKey, str, Status, str]] = [
    (TWO_DAYS_AGO, WEB, f"How do I reset my password? I am {EMAIL}", "complete", "w1"),
    (TWO_DAYS_AGO, WEB, HOSTILE, "dont_know", "w2"),
    (TWO_DAYS_AGO, DISCORD, "Can I pay by card?", "complete", "d1"),
    (NOW, SLACK, "how can I reset my password", "complete", "s1"),
    (NOW, SLACK, "Do you ship to Canada?", "dont_know", "s2"),
    (NOW, DISCORD, "Do you deliver to Canada?", "dont_know", "d2"),
    (NOW, WEB, "Is the shop open on Sundays?", "failed", "w3"),
]


# Answers that cite the knowledge base's documents, as answers do: a "Sources:" footer.
FOOTERS = {
    "w1": "\n\nSources:\n- Refunds and returns (refunds.md)",
    "s1": "\n\nSources:\n- Refunds and returns (refunds.md)\n- Shipping (shipping.md)",
    "d1": "\n\nSources:\n- Shipping (shipping.md)",
}
# Seconds to the first text and to the whole answer (the failed answer has none).
TIMINGS = {
    "w1": (0.5, 2.0),
    "w2": (1.0, 1.0),
    "d1": (0.3, 3.0),
    "s1": (0.7, 2.5),
    "s2": (1.5, 1.5),
    "d2": (0.9, 0.9),
}
DOCUMENTS = {
    "refunds.md": "# Refunds and returns\n\nWe refund any order within 30 days.\n",
    "shipping.md": "# Shipping\n\nWe ship to Canada in 5 to 8 working days.\n",
    "payment.md": "# Payment\n\nWe take cards and bank transfers.\n",
}


async def _seed(store: Store, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """The conversations above, each at its time (SQLite's clock turned back where asked), a
    handoff, and three ratings: two 👍 and a 👎."""
    for when, key, question, status, message_id in SEEDED:
        if monkeypatch is not None:
            clock = SimpleNamespace(time=lambda when=when: when.timestamp())
            monkeypatch.setattr(sqlite_module, "time", clock)
            monkeypatch.setattr(sqlite_records, "time", clock)
        await store.append(key, "user", question)
        answer = "An answer." + FOOTERS.get(message_id, "")
        timing = Timing(*TIMINGS[message_id]) if message_id in TIMINGS else None
        await store.append(
            key, "assistant", answer, status=status, message_id=message_id, timing=timing
        )
    await store.start_handoff(DISCORD, "asked for a person")
    await store.count_outcome("web", "busy")
    for _ in range(2):
        await store.count_outcome("slack", "rate_limited")
    assert await store.add_feedback(WEB, "w1", "u1", "up")
    assert await store.add_feedback(SLACK, "s1", "u2", "up")
    assert await store.add_feedback(DISCORD, "d1", "u3", "down")
    if monkeypatch is not None:
        monkeypatch.undo()
    for ident, question in (("a1b2c3d4e5f6", "Can I pay in gold?"), ("0f0f0f0f0f0f", "Pets?")):
        answer = "No, only by card." if ident == "a1b2c3d4e5f6" else "Yes, <b>small</b> ones."
        await store.add_snippet(
            Snippet(ident, str(DISCORD), question, answer, "pending", NOW, "https://x.example/t")
        )
    assert await store.decide_snippet("a1b2c3d4e5f6", "approved", "Bob", "No, only by card.")
    await store.cite_snippet("a1b2c3d4e5f6")


# What `parley eval --out` writes (bot/evaluation/report.py: write_json), cut to two questions.
EVAL_RUN = {
    "when": "2026-12-01T10:00:00+00:00",
    "settings": {},
    "figures": {"hit_at_1": 0.78, "fact_in_answer": 0.67},
    "questions": [
        {"question": "Do you ship to Canada?", "outcome": "answered", "ok": True, "why": "",
         "answer": "Yes, in 5 to 8 working days."},
        {"question": "<i>Can I pay in gold?</i>", "outcome": "answered", "ok": False,
         "why": "should have said it does not know", "answer": "Yes."},
    ],
}  # fmt: skip


@pytest.fixture
async def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ConsoleServer]:
    store = build_store(Config(store=StoreConfig(path=str(tmp_path / "parley.db"))))
    await store.open()
    await _seed(store, monkeypatch)
    articles = tmp_path / "articles"
    articles.mkdir()
    for name, text in DOCUMENTS.items():
        (articles / name).write_text(text)
    knowledge = KnowledgeBase(KnowledgeConfig(paths=[str(articles)]), str(tmp_path / "kb.db"))
    await knowledge.start()
    (articles / "payment.md").unlink()  # in the index, gone from the folder
    (articles / "delivery.md").write_text("# Delivery\n\nParcels come by post.\n")  # not yet
    evals = tmp_path / "eval"
    (evals / "heldout").mkdir(parents=True)
    (evals / "heldout" / "eval.json").write_text(json.dumps(EVAL_RUN))
    server = ConsoleServer(
        AdminConfig(port=0, eval_dir=str(evals)),
        TOKEN,
        store,
        Embedder().encode,
        clock=lambda: NOW,
        knowledge=knowledge,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        await knowledge.close()
        await store.close()


def _in_the_browser(url: str, profile: str) -> dict[str, Any]:
    driver = _driver(profile)
    seen: dict[str, Any] = {}
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        assert driver.current_url.endswith("/login")
        driver.find_element(By.ID, "token").send_keys("not-the-token")
        driver.find_element(By.ID, "login").click()
        seen["refused"] = wait.until(lambda d: d.find_element(By.ID, "error")).text
        seen["cookie_after_refusal"] = driver.get_cookie("parley_console")

        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.ID, "chart-questions"))
        seen["cookie"] = driver.get_cookie("parley_console")
        seen["questions"] = driver.find_element(By.CSS_SELECTOR, "#questions b").text
        seen["outcomes"] = {
            e.get_attribute("data-outcome"): e.find_element(By.TAG_NAME, "b").text
            for e in driver.find_elements(By.CSS_SELECTOR, ".outcome")
        }
        seen["rating"] = driver.find_element(By.ID, "rating").text
        seen["charts"] = len(driver.find_elements(By.CSS_SELECTOR, "section svg"))
        seen["latency"] = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#latency tr")[1:]
        ]
        seen["per_day"] = [
            [cell.get_attribute("textContent") for cell in row.find_elements(By.XPATH, "./*")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#per-day tr")
        ]
        ARTIFACTS.mkdir(exist_ok=True)
        driver.set_window_size(1100, 1300)
        driver.save_screenshot(str(ARTIFACTS / "console-overview.png"))

        driver.find_element(By.LINK_TEXT, "Gaps").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gaps .gap"))
        gaps = driver.find_elements(By.CSS_SELECTOR, "#gaps .gap")
        seen["gaps"] = [g.find_element(By.CSS_SELECTOR, "summary").text for g in gaps]
        gaps[0].find_element(By.CSS_SELECTOR, "summary").click()
        seen["opened"] = [e.text for e in gaps[0].find_elements(By.CSS_SELECTOR, ".other")]
        seen["bold_in_gaps"] = len(driver.find_elements(By.CSS_SELECTOR, "#gaps b, #gaps img"))

        driver.find_element(By.LINK_TEXT, "Conversations").click()
        driver.find_element(By.ID, "q").send_keys("RESET")
        driver.find_element(By.ID, "search").click()
        wait.until(lambda d: "q=RESET" in d.current_url)
        rows = driver.find_elements(By.CSS_SELECTOR, "#found tr")
        seen["found"] = sorted(r.find_elements(By.TAG_NAME, "td")[1].text for r in rows)
        web = next(r for r in rows if r.find_elements(By.TAG_NAME, "td")[1].text == "web")
        seen["listed"] = web.find_element(By.TAG_NAME, "a").text
        web.find_element(By.TAG_NAME, "a").click()
        wait.until(lambda d: d.find_elements(By.ID, "turns"))
        seen["turns"] = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#turns .turn")]
        driver.find_element(By.ID, "masking").click()
        wait.until(lambda d: EMAIL in d.find_element(By.ID, "turns").text)
        seen["unmasked"] = driver.find_element(By.CSS_SELECTOR, "#turns .turn.user").text

        driver.find_element(By.LINK_TEXT, "Knowledge").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#documents .document"))
        seen["documents"] = _documents(driver)
        shipping = next(
            r
            for r in driver.find_elements(By.CSS_SELECTOR, "#documents .document")
            if r.text.startswith("Shipping")
        )
        shipping.find_element(By.CSS_SELECTOR, "button.reingest").click()
        reingested = wait.until(lambda d: d.find_element(By.ID, "notice"))
        seen["reingested"] = reingested.text
        driver.find_element(By.ID, "refresh").click()
        # The page the click left, notice and all, goes before the next one is read.
        wait.until(staleness_of(reingested))
        seen["refreshed"] = wait.until(lambda d: d.find_element(By.ID, "notice")).text
        seen["documents_after"] = _documents(driver)

        driver.find_element(By.LINK_TEXT, "Quality").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".run"))
        seen["run"] = driver.find_element(By.CSS_SELECTOR, ".run h2").text
        seen["failing"] = driver.find_element(By.CSS_SELECTOR, ".questions tr.fail").text
        seen["italic_in_quality"] = len(driver.find_elements(By.CSS_SELECTOR, ".questions i"))
        seen["csrf"] = driver.find_element(By.NAME, "csrf").get_attribute("value")
        return seen
    finally:
        driver.quit()


def _documents(driver: Any) -> dict[str, str]:
    """Each document's title and how often it was cited."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#documents .document")
    return {
        r.find_element(By.TAG_NAME, "td").text.splitlines()[0]: r.find_element(
            By.CSS_SELECTOR, ".cited"
        ).text
        for r in rows
    }


async def test_the_console_in_a_real_browser(console: ConsoleServer) -> None:
    profile = tempfile.mkdtemp(prefix="parley-chromium-")
    try:
        seen = await asyncio.to_thread(_in_the_browser, console.url, profile)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert seen["refused"] == "That token is not right."
    assert seen["cookie_after_refusal"] is None
    cookie = seen["cookie"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The seeded numbers, as the page shows them.
    assert seen["questions"] == "7"
    assert seen["outcomes"] == {
        "answered": "3",
        "don't know": "3",
        "handed off": "1",
        "busy": "1",
        "rate-limited": "2",
        "failed": "1",
    }
    assert "2 / 1" in seen["rating"] and "67 % positive" in seen["rating"]
    assert seen["charts"] == 3
    # Nearest-rank percentiles of the six timed answers.
    assert seen["latency"] == [["First text", "0.7 s", "1.5 s"], ["Whole answer", "1.5 s", "3.0 s"]]
    days = {row[0]: row[1:] for row in seen["per_day"][1:]}
    assert seen["per_day"][0] == ["Day", "discord", "slack", "web"]
    assert days[TWO_DAYS_AGO.date().isoformat()] == ["1", "0", "2"]
    assert days[NOW.date().isoformat()] == ["1", "2", "1"]
    assert len(days) == 7
    # Gaps: don't-knows and the 👎, grouped by meaning (the embedder), the largest first.
    assert seen["gaps"][0].startswith("2 ×") and "canada" in seen["gaps"][0].lower()
    assert len(seen["opened"]) == 1 and "canada" in seen["opened"][0].lower()
    assert any(HOSTILE.lower() in gap.lower() for gap in seen["gaps"])
    assert seen["bold_in_gaps"] == 0
    assert (ARTIFACTS / "console-overview.png").stat().st_size > 0
    # Conversations: found by a word in any case, personal data masked until asked for.
    assert seen["found"] == ["slack", "web"]
    assert "[email]" in seen["listed"] and EMAIL not in seen["listed"]
    assert len(seen["turns"]) == 6 and all(EMAIL not in t for t in seen["turns"])
    assert "[email]" in seen["turns"][0] and "answered" in seen["turns"][1]
    assert "👍 1 👎 0" in seen["turns"][1] and "don't know" in seen["turns"][3]
    assert HOSTILE in seen["turns"][2]
    assert EMAIL in seen["unmasked"]
    # Knowledge: each document, cited by how many stored answers; re-ingest, bring up to date.
    assert seen["documents"] == {"Refunds and returns": "2", "Shipping": "2", "Payment": "0"}
    assert seen["reingested"].startswith("Shipping re-ingested: 0 added, 1 updated")
    assert seen["refreshed"].startswith("Brought up to date: 1 added, 0 updated, 2 unchanged")
    assert "1 removed" in seen["refreshed"]
    assert set(seen["documents_after"]) == {"Refunds and returns", "Shipping", "Delivery"}
    # Quality: the latest eval run, its failing question as text.
    assert seen["run"] == "heldout, 2026-12-01T10:00:00+00:00"
    assert "<i>Can I pay in gold?</i>" in seen["failing"]
    assert seen["italic_in_quality"] == 0


async def test_posts_need_the_session_and_its_csrf_token(console: ConsoleServer) -> None:
    async with aiohttp.ClientSession() as client:
        form = {"token": TOKEN}
        async with client.post(f"{console.url}login", data=form, allow_redirects=False) as r:
            assert r.status == 303
            session = r.cookies["parley_console"].value
        cookies = {"parley_console": session}
        async with aiohttp.ClientSession(cookies=cookies) as admin:
            async with admin.get(console.url) as page:
                html = await page.text()
                assert page.status == 200
                assert "script-src" not in page.headers["Content-Security-Policy"]
            csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            async with admin.post(f"{console.url}logout", allow_redirects=False) as r:
                assert r.status == 403 and await r.text() == "Missing or wrong CSRF token."
            wrong = {"csrf": "x" * len(csrf)}
            async with admin.post(f"{console.url}logout", data=wrong, allow_redirects=False) as r:
                assert r.status == 403
            async with admin.get(f"{console.url}knowledge") as r:
                learned = (await r.text()).split('id="snippets"', 1)[1].split("</table>", 1)[0]
                assert "Can I pay in gold?" in learned and "approved by Bob" in learned
                assert '<td class="n cited">1</td>' in learned
                assert "&lt;b&gt;small&lt;/b&gt;" in learned  # staff's words shown as text
            async with admin.get(f"{console.url}gaps.csv") as r:
                rows = (await r.text()).splitlines()
                assert rows[0] == "count,question,also asked as" and len(rows) >= 3
            elsewhere = {"csrf": csrf, "unmasked": "1", "back": "//evil.example/"}
            async with admin.post(
                f"{console.url}masking", data=elsewhere, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/"  # not an open redirect
            right = {"csrf": csrf}
            async with admin.post(f"{console.url}logout", data=right, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"
            async with admin.get(console.url, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"
    # Without a session at all: a POST is refused, a page sends to the login.
    async with (
        aiohttp.ClientSession() as stranger,
        stranger.post(f"{console.url}logout", data={"csrf": "x"}) as r,
    ):
        assert r.status == 401


async def test_the_overview_reads_either_store(store_config: StoreConfig) -> None:
    store = build_store(Config(store=store_config))
    await store.open()
    try:
        await _seed(store)
        overview = await build_overview(store, days=1)
    finally:
        await store.close()
    assert overview.questions == 7
    assert (overview.thumbs_up, overview.thumbs_down, overview.handoffs) == (2, 1, 1)
    assert dict(overview.outcomes) == {
        "answered": 3,
        "don't know": 3,
        "failed": 1,
        "handed off": 1,
        "busy": 1,
        "rate-limited": 2,
    }
    assert overview.latency("first_text", 50) == 0.7
    assert overview.latency("whole_answer", 95) == 3.0
    (today,) = overview.per_day.values()
    assert dict(today) == {"web": 3, "discord": 2, "slack": 2}


async def _line(log: Path, *wanted: str, seconds: float = 90) -> str:
    """The first line of ``log`` holding one of ``wanted``, waiting for it to be written."""
    text = ""
    for _ in range(int(seconds * 10)):
        text = await asyncio.to_thread(log.read_text, encoding="utf-8")
        for line in text.splitlines():
            if any(w in line for w in wanted):
                return line
        await asyncio.sleep(0.1)
    raise AssertionError(f"none of {wanted} in {log}:\n{text[-2000:]}")


async def test_parley_run_serves_the_console_only_with_its_token(tmp_path: Path) -> None:
    async with inference() as model:
        config = tmp_path / "parley.toml"
        config.write_text(
            f'[model]\nbackend = "remote"\n[remote]\nbase_urls = ["{model.url}"]\n'
            f'[knowledge]\nenabled = false\n[store]\npath = "{tmp_path / "parley.db"}"\n'
            "[web]\nport = 0\n[ops]\nenabled = false\n[admin]\nport = 0\n"
        )
        for token in ("", TOKEN):
            log = tmp_path / f"parley-{bool(token)}.log"
            with log.open("w", encoding="utf-8") as sink:
                process = ParleyProcess(config, sink, {"PARLEY_ADMIN_TOKEN": token})
                await process.start()
                try:
                    line = await _line(log, "the console at", "the console is off")
                    if not token:
                        assert "the console is off: set PARLEY_ADMIN_TOKEN" in line
                        continue
                    url = line.rsplit(" ", 1)[1]
                    async with aiohttp.ClientSession() as client, client.get(url) as page:
                        assert page.url.path == "/login" and page.status == 200
                finally:
                    await process.stop()
