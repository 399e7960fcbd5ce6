"""Masking secrets and personal data in what Parley logs.

The stored conversation keeps what the user wrote; logs, which travel further, do not.
"""

from __future__ import annotations

import os
import re

__all__ = ["redact"]

_TOKENS = re.compile(
    r"xox[abposr]-[A-Za-z0-9-]{8,}"  # Slack bot/user tokens
    r"|xapp-[A-Za-z0-9-]{8,}"  # Slack app-level tokens
    r"|[MNO][A-Za-z\d_-]{23,27}\.[\w-]{6}\.[\w-]{27,}"  # Discord bot tokens
    r"|(?<=Bot )[\w.-]{20,}|(?<=Bearer )[\w.-]{20,}"  # Authorization headers
)
_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PHONE = re.compile(r"(?<![\w])\+?\(?\d[\d ().-]{6,}\d(?![\w])")
_SECRET_VAR = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY)$")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?: \d{2})?")


def _phone(match: re.Match[str]) -> str:
    found = match.group()
    digits = re.sub(r"\D", "", found)
    # Log timestamps (2026-11-28 17:58) are digits and dashes too.
    if _DATE.fullmatch(found.strip()) or not 8 <= len(digits) <= 15:
        return found
    return "[phone]"


def _secret_values() -> list[str]:
    return [
        value for name, value in os.environ.items() if _SECRET_VAR.search(name) and len(value) >= 8
    ]


def redact(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, "[secret]")
    text = _TOKENS.sub("[secret]", text)
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)
