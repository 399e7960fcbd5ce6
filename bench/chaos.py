"""``python -m bench.chaos``: nothing lost and nothing twice while Parley is killed at random.

``--questions`` questions (100) over ``--channels`` channels (20) of the loopback Discord fake
(tests/fakes/discord.py), sent at random intervals while a driver SIGKILLs the ``parley run``
process at random moments (``--kills``, at least 5) and starts it again after a random pause.
Each question mentions the bot with a question from the sample's golden set, answered from the
sample knowledge base (extractive: the model is not asked, so the run measures delivery). Per
question, the bot's replies to it are counted: answered exactly once, twice or more, or never
(lost); and the delay from question to answer is compared with a calm run of the same
questions without kills: the p95 the restarts add. Results: a table on stdout and
``bench/results/chaos.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bench.process import ROOT, ParleyProcess
from bench.workload import RESULTS, pct
from bot.evaluation.golden import parse_golden
from tests.fakes.discord import BOT_ID, CHANNEL_A, CHANNEL_B, FakeDiscord

#: How long a started Parley may take to connect (it loads the model and the index).
START_WITHIN = 180.0


@dataclass
class Figures:
    questions: int
    kills: int
    answered_once: int
    answered_twice: int
    lost: int
    delay_p50_s: float
    delay_p95_s: float
    seconds: float
    #: The questions never answered (message id, channel, seconds into the run it was asked),
    #: and when Parley was killed and started again (seconds into the run), to see why.
    lost_questions: list[tuple[str, str, float]] = field(default_factory=list)
    timeline: list[tuple[str, float]] = field(default_factory=list)


class Parley(ParleyProcess):
    """``parley run`` against the fake Discord, ready once it has a gateway session."""

    def __init__(
        self, fake: FakeDiscord, folder: Path, log: IO[str], model_cache: Path | None = None
    ) -> None:
        self.fake = fake
        config = folder / "parley.toml"
        model = f'[model]\ncache_dir = "{model_cache}"\n' if model_cache else ""
        config.write_text(
            model + f'[store]\npath = "{folder / "parley.db"}"\n'
            "[web]\nenabled = false\n[ops]\nenabled = false\n"
            "[limits]\nuser_per_minute = 0\nchannel_per_minute = 0\n"
            "bot_messages_per_channel_minute = 0\nrecover_per_minute = 0\n"
            f'[discord]\nenabled = true\napi_base = "{fake.api_base}"\n'
            f'gateway_url = "{fake.gateway_url}"\nedit_interval = 0.2\n'
            "guild_ready_timeout = 0.5\n",
            encoding="utf-8",
        )
        super().__init__(config, log, {"DISCORD_TOKEN": fake.token})

    async def start(self) -> None:
        """Start it and wait until it has a gateway session."""
        sessions = len(self.fake.identifies)
        await super().start()
        await self.fake.wait_for(lambda: len(self.fake.identifies) > sessions, START_WITHIN)


def questions(count: int) -> list[str]:
    golden = parse_golden((ROOT / "config" / "eval" / "sample.jsonl").read_text(encoding="utf-8"))
    asked = [item.question for item in golden if not item.out_of_scope and not item.history]
    return [asked[n % len(asked)] for n in range(count)]


def replies(fake: FakeDiscord, question: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m
        for m in fake.messages.values()
        if m.get("message_reference", {}).get("message_id") == question["id"]
    ]


async def run(
    count: int,
    channels: int,
    kills: int,
    seed: int,
    folder: Path,
    log: IO[str],
    within: float = 300.0,
    model_cache: Path | None = None,
) -> Figures:
    """One run (``kills`` 0: the calm one), Parley's output in ``log``."""
    rng = random.Random(seed)
    fake = await FakeDiscord(channels=max(0, channels - 2)).start()
    places = [CHANNEL_A, CHANNEL_B, *fake.extra_channels][:channels]
    parley = Parley(fake, folder, log, model_cache)
    began = time.monotonic()
    started = time.time()
    timeline: list[tuple[str, float]] = []
    try:
        await parley.start()
        asked: list[tuple[dict[str, Any], float]] = []

        async def ask() -> None:
            for n, text in enumerate(questions(count)):
                message = await fake.send_message(
                    f"<@{BOT_ID}> {text}", channel=places[n % len(places)], mentions=(BOT_ID,)
                )
                asked.append((message, time.time()))
                await asyncio.sleep(rng.uniform(0.05, 0.5))

        async def chaos() -> None:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                await parley.kill()
                timeline.append(("killed", round(time.time() - started, 2)))
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                timeline.append(("starting", round(time.time() - started, 2)))
                await parley.start()
                timeline.append(("connected", round(time.time() - started, 2)))

        await asyncio.gather(ask(), chaos())
        for _ in range(int(within / 0.5)):
            if all(replies(fake, m) for m, _ in asked):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # time for a second answer to show, were there one
    finally:
        await parley.stop()
        await fake.close()
    counts = [len(replies(fake, message)) for message, _ in asked]
    delays = [
        datetime.fromisoformat(min(r["timestamp"] for r in replies(fake, message))).timestamp()
        - sent
        for message, sent in asked
        if replies(fake, message)
    ]
    return Figures(
        questions=len(asked),
        kills=kills,
        answered_once=counts.count(1),
        answered_twice=sum(1 for c in counts if c >= 2),
        lost=counts.count(0),
        delay_p50_s=round(pct(delays, 50), 2),
        delay_p95_s=round(pct(delays, 95), 2),
        seconds=round(time.monotonic() - began, 1),
        lost_questions=[
            (message["id"], message["channel_id"], round(sent - started, 2))
            for message, sent in asked
            if not replies(fake, message)
        ],
        timeline=timeline,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="parley-chaos-"))
    runs: dict[str, Figures] = {}
    for name, kills in (("calm", 0), ("chaos", max(5, args.kills))):
        (folder / name).mkdir()
        with open(folder / name / "parley.log", "w", encoding="utf-8") as log:
            runs[name] = asyncio.run(
                run(args.questions, args.channels, kills, args.seed, folder / name, log)
            )
    calm, chaos = runs["calm"], runs["chaos"]
    cpu = f"{_cpu_name()}, {os.cpu_count()} cores"
    print(f"bench.chaos on {cpu}; logs in {folder}\n")
    print("| run | questions | kills | answered once | twice | lost | delay p50 / p95 (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, found in (("calm", calm), ("chaos", chaos)):
        print(
            f"| {name} | {found.questions} | {found.kills} | {found.answered_once} |"
            f" {found.answered_twice} | {found.lost} | {found.delay_p50_s} /"
            f" {found.delay_p95_s} |"
        )
    print(f"\np95 delay added by the restarts: {chaos.delay_p95_s - calm.delay_p95_s:.1f} s")
    if chaos.lost_questions:
        print(f"lost: {chaos.lost_questions}\nkills and restarts: {chaos.timeline}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.json").write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpu": cpu,
                "calm": asdict(calm),
                "chaos": asdict(chaos),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return 0 if chaos.lost == 0 and chaos.answered_twice == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
