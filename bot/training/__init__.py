"""Fine-tuning the support model on the company's own conversations.

``data`` reads chat JSONL and turns it into token ids with loss only on the assistant's words,
``train`` runs transformers' ``Trainer`` and writes a model folder that ``model.name`` serves,
``export`` writes training data from the conversation store. torch and transformers are
imported only inside the functions that need them, so the CLI stays quick to start.
"""

from bot.errors import ParleyError

__all__ = ["TrainingError"]


class TrainingError(ParleyError):
    """Training cannot start or go on: bad data, a wrong output folder, nothing to resume."""
