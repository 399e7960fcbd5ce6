"""How much reduced precision changes the model: perplexity on held-out text, and agreement
with the float32 outputs."""

from __future__ import annotations

from typing import Any

from bench.workload import ROOT


# -- quality of reduced precision ---------------------------------------------------------------
def _held_out_text() -> str:
    """Text the model cannot have seen in training: this project's own documents."""
    parts = []
    for name in ("README.md", "CHANGELOG.md", "config/default.toml"):
        path = ROOT / name
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8"))
    return "\n\n".join(parts)


def perplexity(model: Any, tokenizer: Any, tokens: int = 1024, window: int = 256) -> float:
    import torch

    ids = tokenizer(_held_out_text(), add_special_tokens=False)["input_ids"][:tokens]
    device = next(model.parameters()).device
    losses, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = torch.tensor([ids[start : start + window + 1]], device=device)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            losses += float(loss)
            count += chunk.shape[1] - 1
    return round(float(torch.exp(torch.tensor(losses / count))), 3)


def agreement(reference: list[str], other: list[str], tokenizer: Any) -> dict[str, float]:
    """How much of fp32's greedy reply another precision reproduces: exact replies, and the share
    of tokens before the first difference."""
    exact, shared, total = 0, 0, 0
    for a, b in zip(reference, other, strict=True):
        ta = tokenizer(a, add_special_tokens=False)["input_ids"]
        tb = tokenizer(b, add_special_tokens=False)["input_ids"]
        exact += ta == tb
        prefix = 0
        for x, y in zip(ta, tb, strict=False):  # lengths differ where outputs do
            if x != y:
                break
            prefix += 1
        shared += prefix
        total += max(len(ta), 1)
    return {
        "exact_replies": round(exact / max(len(reference), 1), 3),
        "prefix_tokens": round(shared / max(total, 1), 3),
    }
