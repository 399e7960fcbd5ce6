"""The package as a team installs it: the built wheel in a fresh venv, run outside the checkout.

The fresh venv borrows the project venv's third-party packages through a ``.pth`` line (torch
and transformers would take minutes and gigabytes to install again); Parley itself, its web
page, its kernels' sources and the sample knowledge base come from the wheel alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODEL_CACHE

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = (".*", "build", "data", "tests", "bench", "*.egg-info", "__pycache__")


def _run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=240, **kwargs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout installed; its ``bin``."""
    scratch = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build would leave build/ in the checkout.
    source = scratch / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        scratch / "dist",
        source,
    )
    (wheel,) = (scratch / "dist").glob("parley-*.whl")
    venv = scratch / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
    )
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    borrowed = sysconfig.get_path("purelib")
    Path(site.stdout.strip(), "borrowed-dependencies.pth").write_text(borrowed + "\n")
    return venv / "bin"


def test_the_wheel_answers_from_the_sample_knowledge_base(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PARLEY_CONFIG", "PYTHONPATH")}
    where = _run(
        installed / "python", "-c", "import bot; print(bot.__file__)", cwd=elsewhere, env=env
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    config = elsewhere / "parley.toml"
    # Only where the converted model is cached; the knowledge base is the default's.
    config.write_text(f'[model]\ncache_dir = "{MODEL_CACHE}"\n')
    result = _run(
        installed / "parley",
        "chat",
        "--config",
        config,
        cwd=elsewhere,
        env=env,
        input="How do I reset my password?\n",
    )
    answer = result.stdout
    assert "password" in answer.lower()
    assert "resetting-your-password.md" in answer, answer
