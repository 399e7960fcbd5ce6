"""Generation backends: ``Backend`` and its implementations.

torch and transformers are imported lazily by the local backend, so the rest of the core (and
every adapter) can be imported without them.
"""

from bot.generation.base import Backend, ChatMessage, GenerationParams

__all__ = ["Backend", "ChatMessage", "GenerationParams"]
