"""Greetings, thanks and goodbyes: a short friendly reply, neither a search nor a don't-know.

With a knowledge base, the bot answers only from it; "thanks!" is not a question it could find
there, and a don't-know to it would be absurd. The replies are written here, not by the model:
nothing in them can be wrong.
"""

from __future__ import annotations

import re

__all__ = ["accepts", "reply_to", "small_talk"]

_GREETING = r"(?:hi|hello|hey|hiya|howdy|yo|good (?:morning|afternoon|evening))(?: \w+)?"
_THANKS = r"(?:thanks?(?: you)?(?: (?:so|very) much| a lot)?(?: \w+)?|thx|ty|cheers)"
_BYE = r"(?:bye|goodbye|see you|have a nice day)"
_OK = r"(?:ok(?:ay)?|cool|great|perfect|awesome|got it)"
_YES = re.compile(
    r"(?:yes|yeah|yep|yup|sure|y|please|please do|ok please|okay please|yes please)"
    r"(?: please| thanks| thank you)?"
)
_KINDS = {
    "greeting": re.compile(_GREETING),
    "thanks": re.compile(_THANKS),
    "bye": re.compile(_BYE),
    "ok": re.compile(_OK),
}


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def small_talk(text: str) -> str | None:
    """The kind of small talk ``text`` is (greeting, thanks, bye, ok), or None."""
    words = _words(text)
    if not words:
        return None
    return next((kind for kind, pattern in _KINDS.items() if pattern.fullmatch(words)), None)


def reply_to(kind: str, name: str, company: str) -> str:
    """The reply to a kind of small talk, in the voice of ``name`` at ``company``."""
    if kind == "greeting":
        who = f"{name}, {company}'s support assistant" if company else name
        return f"Hi! I'm {who}. What can I help you with?"
    if kind == "thanks":
        return "You're welcome! Is there anything else I can help with?"
    if kind == "bye":
        return "Goodbye, and thanks for getting in touch!"
    return "Glad that helped. Is there anything else I can help with?"


def accepts(text: str) -> bool:
    """Whether ``text`` says yes to an offer ("yes please", "sure")."""
    return _YES.fullmatch(_words(text)) is not None
