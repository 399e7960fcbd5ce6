"""Generation backends: ``Backend`` and its implementations.

torch and transformers are imported lazily by the local backend, so the rest of the core (and
every adapter) can be imported without them.
"""

from bot.config import Config
from bot.generation.base import Backend, ChatMessage, GenerationParams

__all__ = ["Backend", "ChatMessage", "GenerationParams", "build_backend"]


def build_backend(config: Config) -> Backend:
    """The local engine, or the inference servers of ``[remote]``."""
    if config.model.backend == "remote":
        from bot.generation.remote import RemoteBackend

        return RemoteBackend(config.remote, config.model)
    from bot.generation.local import LocalBackend

    return LocalBackend(config.model)
