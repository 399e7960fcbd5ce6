"""Configuration: defaults documented, overrides validated, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from adapters.settings import PLATFORMS, DiscordConfig
from bot.app.cli import _parser, main
from bot.app.wiring import load
from bot.config import Config, load_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOML = ROOT / "config" / "default.toml"


def _as_dict(config: Config) -> dict[str, object]:
    """``config`` as the TOML that would set it: the platforms' tables beside the core's."""
    data = dataclasses.asdict(config)
    for name in ("source", "platforms", "sections"):
        data.pop(name)
    return data | {name: dataclasses.asdict(table) for name, table in config.sections.items()}


def test_default_toml_documents_every_key_with_its_default() -> None:
    documented = tomllib.loads(DEFAULT_TOML.read_text())
    assert documented == _as_dict(load())
    assert set(load().sections) == {p.name for p in PLATFORMS if p.section is not None}


def test_default_toml_loads_as_a_user_file() -> None:
    config = load(DEFAULT_TOML)
    assert _as_dict(config) == _as_dict(load())
    assert config.source == str(DEFAULT_TOML)


def test_user_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[bot]\ncompany = "Globex"\n[model]\ntemperature = 0\n')
    config = load_config(path)
    assert config.bot.company == "Globex"
    assert config.model.temperature == 0.0 and isinstance(config.model.temperature, float)
    assert config.bot.name == Config().bot.name


def test_parley_config_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.toml"
    path.write_text('[bot]\nname = "Ada"\n')
    monkeypatch.setenv("PARLEY_CONFIG", str(path))
    assert load_config().bot.name == "Ada"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[model]\nnmae = "x"\n', "unknown key 'model.nmae'"),
        ("[modle]\n", "unknown key 'modle'"),
        ('[model]\nmax_new_tokens = "many"\n', "'model.max_new_tokens' must be an integer"),
        ("[model]\nmax_new_tokens = 1.5\n", "'model.max_new_tokens' must be an integer"),
        ('[model]\ndevice = "gpu"\n', "'model.device' must be 'auto' or 'cpu' or 'cuda'"),
        ("[bot]\nname = true\n", "'bot.name' must be a string"),
        ("model = 3\n", "'model' must be a table"),
        ('[discord]\ntokn_env = "X"\n', "unknown key 'discord.tokn_env'"),
        ('[slack]\nmode = "rtm"\n', "'slack.mode' must be 'socket' or 'http'"),
        ("web = 3\n", "'web' must be a table"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_the_core_alone_knows_no_platform_table(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[discord]\nenabled = false\n")
    with pytest.raises(ConfigError, match="unknown key 'discord'"):
        load_config(path)
    assert not load(path).section(DiscordConfig).enabled
    assert Config().section(DiscordConfig) == DiscordConfig()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_exits_2_with_one_line_on_a_config_typo(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[bot]\nnmae = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(path), "chat"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"parley: {path}: unknown key 'bot.nmae'"]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{path}", "chat"],
        ["chat", "--config", "{path}"],
        ["kb", "search", "--config", "{path}", "a question"],
        ["policy", "reload", "--config", "{path}"],
        ["eval", "--config", "{path}", "config/eval/sample.jsonl"],
    ],
)
def test_config_is_taken_before_or_after_the_subcommand(tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[bot]\nnmae = 'x'\n")
    # The typo shows the file was read, whichever the subcommand and wherever the option.
    assert main([part.format(path=path) for part in argv]) == 2


def test_every_subcommand_takes_config() -> None:
    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = [] if "--config" in parser._option_string_actions else [path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{path} {name}")
        return missing

    assert walk(_parser(), "parley") == []


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for command in ("run", "chat"):
        assert command in result.stdout


def test_a_repetition_penalty_of_zero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "parley.toml"
    path.write_text("[model]\nrepetition_penalty = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'model.repetition_penalty' must be above 0"):
        load_config(str(path))
