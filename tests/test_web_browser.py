"""The web chat in a real headless Chromium: type a question, watch the streamed answer, and make
sure HTML in a model's answer is shown as text, never run.

Chromium and ChromeDriver are the Debian packages that `make test` installs
(.ci/install-browser); without them this test fails and says so rather than skipping."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.pdfs import text_pdf
from tests.scripted import ScriptedBackend, quoting
from tests.test_web import chat_server, web_config

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HOSTILE = "Here you go: <img src=x onerror=alert(1)> and **bold** advice."
DEPARTURE = quoting(r"Departure time: [^\n]+", "Your booking says", "I see no booking")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _driver(profile: str) -> webdriver.Chrome:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium is not installed: run .ci/install-browser (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=420,800",  # a phone-sized screen
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))


def _open_chat(driver: webdriver.Chrome, url: str) -> tuple[WebDriverWait[Any], WebElement]:
    """The chat page loaded and connected: a wait, and the question box."""
    driver.get(url)
    wait = WebDriverWait(driver, 60)
    box = driver.find_element(By.ID, "input")
    wait.until(lambda _: box.is_enabled())
    return wait, box


def _ask_in_the_page(url: str, profile: str) -> tuple[str, int, bool, str]:
    driver = _driver(profile)
    try:
        wait, box = _open_chat(driver, url)
        box.send_keys("How do I reset my password?", Keys.ENTER)

        def answered(_: object) -> str | bool:
            bubbles = driver.find_elements(By.CSS_SELECTOR, "#log .message.assistant .body")
            texts = [b.text for b in bubbles]
            return next((t for t in texts if "advice." in t), False)

        text = str(wait.until(answered))
        images = len(driver.find_elements(By.CSS_SELECTOR, "#log img"))
        try:
            _ = driver.switch_to.alert
            alerted = True
        except NoAlertPresentException:
            alerted = False
        bold = driver.find_elements(By.CSS_SELECTOR, "#log .message.assistant strong")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "web-chat.png"))
        return text, images, alerted, bold[0].text if bold else ""
    finally:
        driver.quit()


async def test_a_real_browser_asks_and_sees_the_answer_as_text(tmp_path: Path) -> None:
    backend = ScriptedBackend(HOSTILE, chunk=6, delay=0.02)
    profile = tempfile.mkdtemp(prefix="parley-chromium-")
    try:
        async with chat_server(web_config(tmp_path), backend=backend) as chat:
            text, images, alerted, bold = await asyncio.to_thread(
                _ask_in_the_page, chat.url, profile
            )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert "<img src=x onerror=alert(1)>" in text
    assert images == 0 and not alerted
    assert bold == "bold"
    assert (ARTIFACTS / "web-chat.png").stat().st_size > 0
    assert len(backend.prompts) == 1


def _attach_in_the_page(url: str, profile: str, path: Path) -> tuple[str, str, str]:
    driver = _driver(profile)
    try:
        wait, box = _open_chat(driver, url)
        driver.find_element(By.ID, "attach").send_keys(str(path))
        wait.until(lambda _: driver.find_elements(By.CSS_SELECTOR, "#files li"))
        chip = driver.find_element(By.CSS_SELECTOR, "#files li").text
        box.send_keys("when does my boat leave?", Keys.ENTER)

        def answered(_: object) -> str | bool:
            bubbles = driver.find_elements(By.CSS_SELECTOR, "#log .message.assistant .body")
            return next((b.text for b in bubbles if "Your booking says" in b.text), False)

        answer = str(wait.until(answered))
        asked = driver.find_elements(By.CSS_SELECTOR, "#log .message.user .body")[-1].text
        return chip, asked, answer
    finally:
        driver.quit()


async def test_a_file_attached_in_the_browser_is_read_with_the_question(tmp_path: Path) -> None:
    booking = tmp_path / "booking.pdf"
    booking.write_bytes(text_pdf("Booking KF-9", "Departure time: 06:10 on 3 January"))
    profile = tempfile.mkdtemp(prefix="parley-chromium-")
    try:
        async with chat_server(web_config(tmp_path), ScriptedBackend(DEPARTURE)) as chat:
            chip, asked, answer = await asyncio.to_thread(
                _attach_in_the_page, chat.url, profile, booking
            )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert chip == "📎 booking.pdf"
    assert asked == "when does my boat leave?\n📎 booking.pdf"
    assert answer == "Your booking says Departure time: 06:10 on 3 January."
