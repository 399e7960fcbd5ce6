"""One exception tree for Parley.

ParleyError
 ├── ConfigError        bad configuration: stops start-up with one line, exit code 2
 ├── Busy               the admission queue is full: answer "try again" at once
 ├── GenerationError    the model failed while answering
 │    └── ModelLoadError   the model could not be found or loaded
 ├── PlatformError      a chat platform refused or failed a call
 └── StoreError         the conversation store cannot read or write
"""

__all__ = [
    "Busy",
    "ConfigError",
    "GenerationError",
    "ModelLoadError",
    "ParleyError",
    "PlatformError",
    "StoreError",
]


class ParleyError(Exception):
    """Base of every error Parley raises on purpose."""


class ConfigError(ParleyError):
    """The configuration is wrong; the message names the key and the file."""


class Busy(ParleyError):
    """Too much work is queued; the caller should try again in a moment."""


class GenerationError(ParleyError):
    """The model failed while producing a reply."""


class ModelLoadError(GenerationError):
    """The configured model could not be found or loaded."""


class PlatformError(ParleyError):
    """A chat platform refused or failed a call."""


class StoreError(ParleyError):
    """The conversation store cannot read or write (disk full, read-only, locked)."""
