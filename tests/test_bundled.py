"""The embedded default end to end: the bundled model answers through `parley chat`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE


@pytest.mark.bundled
def test_piped_chat_answers_a_support_question(tmp_path: Path, bundled_dir: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[model]\ncache_dir = "{MODEL_CACHE}"\ntemperature = 0\nmax_new_tokens = 60\n'
        f'[store]\npath = "{tmp_path / "parley.db"}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "chat"],
        input="How do I reset my password?\n",
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert len(answer) > 20
    assert "password" in answer.lower()
