"""Nothing lost, nothing twice: the real ``parley run`` process and discord.py, SIGKILLed at
random moments while questions arrive (a short run of ``python -m bench.chaos``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run
from tests.conftest import MODEL_CACHE


@pytest.mark.bundled
@pytest.mark.timeout(600)
async def test_questions_survive_random_kills_answered_exactly_once(
    tmp_path: Path, bundled_dir: Path
) -> None:
    with open(tmp_path / "parley.log", "w", encoding="utf-8") as log:  # noqa: ASYNC230
        found = await run(12, 3, kills=2, seed=7, folder=tmp_path, log=log, model_cache=MODEL_CACHE)
    assert (found.questions, found.kills) == (12, 2)
    log_tail = (tmp_path / "parley.log").read_text(encoding="utf-8")[-3000:]
    assert (found.lost, found.answered_twice) == (0, 0), log_tail
    assert found.answered_once == 12
