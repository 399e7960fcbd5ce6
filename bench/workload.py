"""The workload every system of the generation bench is measured on (realistic multi-turn
support conversations, rendered by Parley's own prompt builder), and how one measurement is
summarised."""

from __future__ import annotations

import random
import resource
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL_CACHE = ROOT / ".cache" / "models"
NEW_TOKENS = 64

# Realistic support traffic: earlier turns of a conversation and the message to answer now.
EARLIER = [
    (
        "Hi, I can't log in to my account since this morning.",
        "I'm sorry to hear that. Could you tell me which error message you see when you try to log "
        "in? If it says your password is wrong, you can reset it from the login page with 'Forgot "
        "password'.",
    ),
    (
        "It says my account is locked.",
        "Accounts are locked for 30 minutes after five failed attempts, to protect them. You can "
        "wait, or I can ask a colleague to unlock it now if you confirm the e-mail address on the "
        "account.",
    ),
    (
        "How much does the Pro plan cost?",
        "The Pro plan is 29 dollars per user per month, or 290 dollars per user per year when paid "
        "annually. It includes priority support, 1 TB of storage per team and single sign-on.",
    ),
    (
        "Can I get an invoice with my company's VAT number on it?",
        "Yes. Add the VAT number under Settings, then Billing, then Company details; every invoice "
        "issued after that shows it. For past invoices, reply here with their numbers and we will "
        "reissue them.",
    ),
    (
        "My upload keeps failing at 99 percent.",
        "That usually happens when the file is larger than the 5 GB limit for a single upload or "
        "when the connection drops at the end. Could you tell me the file size and your browser?",
    ),
    (
        "It's a 7 GB video, in Chrome.",
        "Thanks. Files over 5 GB need the desktop app, which uploads them in parts and resumes"
        " after a dropped connection. You can download it from the Apps page in your account.",
    ),
    (
        "Do you have an API for exporting reports?",
        "We do: the Reports API returns any saved report as CSV or JSON. You will find the "
        "documentation and your API key under Settings, then Developers.",
    ),
    (
        "We were charged twice this month.",
        "I'm sorry about that. I can see two charges on the 3rd; the second one is a duplicate and "
        "I have asked our billing team to refund it. It takes 5 to 10 working days to appear.",
    ),
]
QUESTIONS = [
    "How do I reset my password?",
    "Can I change the e-mail address of my account without losing my files?",
    "Why is the dashboard so slow today? The billing page takes a minute to open.",
    "How do I add a new user to my team, and will it change my bill this month?",
    "Is there a way to export all my data before I cancel my subscription?",
    "I switched to the annual plan yesterday but I was still charged the monthly price. Why?",
    "Do you support two-factor authentication with an authenticator app?",
    "What happens to shared links when I delete a folder?",
    "Can I get a refund for the unused months if I downgrade from Pro to Basic?",
    "How can I see who changed a document last week?",
    "The mobile app crashes when I open a PDF. What can I do?",
    "Where can I find the invoices from last year?",
]


@dataclass
class Measured:
    """One system at one N."""

    tokens: int
    wall: float
    ttft: list[float]
    total: list[float]
    rss_mb: float
    outputs: list[str]

    def row(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "wall_s": round(self.wall, 3),
            "tok_per_s": round(self.tokens / self.wall, 2),
            "ttft_p50_s": round(pct(self.ttft, 50), 3),
            "ttft_p95_s": round(pct(self.ttft, 95), 3),
            "total_p50_s": round(pct(self.total, 50), 3),
            "total_p95_s": round(pct(self.total, 95), 3),
            "peak_rss_mb": round(self.rss_mb),
        }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- prompts ------------------------------------------------------------------------------------
def build_conversations(count: int, seed: int = 5) -> list[list[dict[str, str]]]:
    """``count`` conversations with 0 to 4 earlier exchanges, rendered by Parley's own prompt
    builder (system prompt, trimming to the window) into chat messages."""
    from bot.config import BotConfig, ModelConfig
    from bot.core.conversation import ConversationManager
    from bot.generation.models import PromptFormat
    from bot.storage.base import Turn

    tokenizer = load_tokenizer()
    backend = _CountingBackend(PromptFormat(tokenizer))
    model_config = ModelConfig(max_new_tokens=NEW_TOKENS, temperature=0.0)
    manager = ConversationManager(None, backend, BotConfig(), model_config)  # type: ignore[arg-type]
    rng = random.Random(seed)
    now = datetime.now(UTC)
    conversations = []
    for i in range(count):
        turns: list[Turn] = []
        for user, assistant in rng.sample(EARLIER, k=i % 5):
            turns += [Turn("user", user, now), Turn("assistant", assistant, now)]
        prompt = manager.answerer.build_prompt(turns, QUESTIONS[i % len(QUESTIONS)])
        conversations.append([{"role": m.role, "content": m.content} for m in prompt.messages])
    return conversations


class _CountingBackend:
    """What ``build_prompt`` asks of a backend, answered by the tokenizer alone."""

    context_window = 2048

    def __init__(self, prompt_format: Any) -> None:
        self.format = prompt_format

    def count_tokens(self, messages: Any) -> int:
        return len(self.format.encode(messages))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.format.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        return str(self.format.tokenizer.decode(ids))


def model_dir() -> Path:
    from bot.generation.models import _converted_gguf, bundled_gguf

    return _converted_gguf(bundled_gguf(), MODEL_CACHE)


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()))


def chat_messages(conversation: list[dict[str, str]]) -> list[Any]:
    from bot.generation.base import ChatMessage

    return [ChatMessage(m["role"], m["content"]) for m in conversation]  # type: ignore[arg-type]
