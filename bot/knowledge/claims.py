"""Specifics in an answer, and whether the evidence holds them: the claim check.

A specific is what a customer would act on: a number, an amount, a percentage, a duration, a
date or time, a URL, an e-mail address, a phone number, a quoted UI label ("Forgot
password?"), and, for the claim check, a name in mid-sentence (a plan, a product, a button, a
person). :class:`Evidence` is what an answer may draw on: the knowledge base's text, the
conversation, the question.

- :func:`has_fact`: a golden fact is in an answer, after normalising case, punctuation,
  spacing, currency ("€12" = "12 €" = "12 EUR" = "12 euros") and number formats ("1,000" =
  "1000", "$10.00" = "$10", "9:00am" = "9 am") (``parley eval``);
- :func:`unsupported`: the specifics of an answer that occur nowhere in the evidence;
- :func:`check` and :class:`StreamCheck`: what the model wrote, less every sentence that states
  an unsupported specific.

Numbers are compared as numbers, not by the words around them: "180 kilograms" is supported by
"180 kg", "10,256 kilograms" is not. Numbers written as words ("thirty") are not specifics
here; a golden line that expects them lists that form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Checked",
    "Evidence",
    "Specific",
    "StreamCheck",
    "check",
    "has_fact",
    "specifics",
    "tokens",
    "unsupported",
]

_CURRENCY_SIGNS = {"€": "eur", "£": "gbp", "$": "usd"}
_CURRENCY_WORDS = {
    "eur": "eur",
    "euro": "eur",
    "euros": "eur",
    "gbp": "gbp",
    "pound": "gbp",
    "pounds": "gbp",
    "usd": "usd",
    "dollar": "usd",
    "dollars": "usd",
}
_CURRENCIES = frozenset(_CURRENCY_WORDS.values())
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]*\d)")
_NUMBER = re.compile(r"\d+(?:[.:]\d+)*")
_TOKEN = re.compile(r"\d+(?:[.:]\d+)*|[^\W\d_]+")
_DOTTED = re.compile(r"\b([a-z])\.([a-z])\.")  # a.m., p.m., e.g.


def _number(text: str) -> str:
    """A number's canonical form: no thousands commas, no leading zeros, no ".00" or ":00"."""
    text = text.replace(",", "")
    parts = re.split(r"([.:])", text)
    head = parts[0].lstrip("0") or "0"
    rest = "".join(parts[1:])
    rest = re.sub(r"^(?:[.:]0+)+$", "", rest)
    return head + rest


def tokens(text: str) -> list[str]:
    """``text`` as the words and numbers facts are compared by (see the module's doc)."""
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = _DOTTED.sub(r"\1\2", text)
    text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    for sign, word in _CURRENCY_SIGNS.items():
        text = text.replace(sign, f" {word} ")
    text = text.replace("%", " percent ").replace("per cent", "percent")
    words = []
    for token in _TOKEN.findall(text):
        if token[0].isdigit():
            token = _number(token)
        words.append(_CURRENCY_WORDS.get(token, token))
    # A currency before its amount moves behind it: "eur 12" reads as "12 eur" (unless it
    # already follows one: "12 eur, 1000 items").
    i = 0
    while i < len(words) - 1:
        after_number = i > 0 and words[i - 1][0].isdigit()
        if words[i] in _CURRENCIES and words[i + 1][0].isdigit() and not after_number:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 1
        i += 1
    return words


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    if not needle:
        return False
    joined = f" {' '.join(haystack)} "
    return f" {' '.join(needle)} " in joined


def has_fact(answer: str, forms: Iterable[str]) -> bool:
    """Whether ``answer`` holds one of a fact's accepted ``forms``."""
    said = tokens(answer)
    return any(_contains(said, tokens(form)) for form in forms)


@dataclass(frozen=True, slots=True)
class Specific:
    kind: str  # url, email, date, phone, amount, percentage, quantity, number, label, name
    text: str  # as the answer writes it


_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>()\"'\]]+"
    r"|\b(?:[a-z0-9-]+\.)+(?:com|org|net|io|co|uk|ie|de|fr|eu|app|help|info)\b(?:/[^\s<>()\"']*)?",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_PHONE = re.compile(r"(?<![\w/])\+?(?:\d{1,3} ?)?(?:\(\d+\) ?)?\d[\d .-]{5,}\d(?![\w/])")
_QUOTED = re.compile(r"\"([^\"\n]{2,60})\"|“([^”\n]{2,60})”|(?<!\w)'([^'\n]{2,60})'(?!\w)")
_AMOUNT = re.compile(
    r"[$€£]\s?\d[\d,]*(?:\.\d+)?"
    r"|\d[\d,]*(?:\.\d+)?\s?(?:[$€£]|eur\b|euros?\b|gbp\b|pounds?\b|usd\b|dollars?\b)",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"\d[\d,]*(?:\.\d+)?\s?(?:%|per ?cent\b)", re.IGNORECASE)
#: Units a quantity is compared with: "60 minutes" is not "60 days", "180 kg" is "180 kilograms".
_UNITS = {
    **dict.fromkeys(["second", "seconds", "sec", "secs"], "second"),
    **dict.fromkeys(["minute", "minutes", "min", "mins"], "minute"),
    **dict.fromkeys(["hour", "hours", "hr", "hrs"], "hour"),
    **dict.fromkeys(["day", "days"], "day"),
    **dict.fromkeys(["week", "weeks"], "week"),
    **dict.fromkeys(["month", "months"], "month"),
    **dict.fromkeys(["year", "years"], "year"),
    **dict.fromkeys(["am", "a.m."], "am"),
    **dict.fromkeys(["pm", "p.m."], "pm"),
    **dict.fromkeys(["kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"], "kg"),
    **dict.fromkeys(["gb", "gigabyte", "gigabytes"], "gb"),
    **dict.fromkeys(["mb", "megabyte", "megabytes"], "mb"),
    **dict.fromkeys(["tb", "terabyte", "terabytes"], "tb"),
    **dict.fromkeys(["km", "kilometre", "kilometres", "kilometer", "kilometers"], "km"),
    **dict.fromkeys(["m", "metre", "metres", "meter", "meters"], "m"),
    **dict.fromkeys(["cm", "centimetre", "centimetres", "centimeter", "centimeters"], "cm"),
    **dict.fromkeys(["mile", "miles"], "mile"),
}
_NUMBER_WORDS = {
    word: str(n)
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve"  # noqa: SIM905
        " thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90"}
_UNIT_WORDS = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_KIND_OF_DAY = "(?:business |working |calendar )?"
_QUANTITY = re.compile(
    rf"(\d[\d,]*(?:\.\d+)?)(?:\s|-)?{_KIND_OF_DAY}({_UNIT_WORDS})(?!\w)", re.IGNORECASE
)
_WORD_QUANTITY = re.compile(
    rf"\b({'|'.join(_NUMBER_WORDS)})(?:\s|-){_KIND_OF_DAY}({_UNIT_WORDS})(?!\w)", re.IGNORECASE
)


def _quantity(number: str, unit: str) -> str:
    number = _NUMBER_WORDS.get(number.lower(), number)
    return f"{_number(number)} {_UNITS[unit.lower()]}"


_NUMERIC = re.compile(r"\d(?:[\d,]*\d)?(?:[.:/]\d+)*")
# Not specifics: a numbered list's markers, and an answer's citation marks.
_LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)](?=\s|$)", re.MULTILINE)
_CITATION = re.compile(r"\[\d{1,2}\]")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _phone_like(text: str) -> bool:
    """Seven digits or more, and not a range of years ("2019-2023") or times ("9.00 - 17.30")."""
    if re.fullmatch(r"\d{4}\s?-\s?\d{4}|\d{1,2}[.:]\d\d\s?-\s?\d{1,2}[.:]\d\d", text):
        return False
    return len(_digits(text)) >= 7


def _url_key(url: str) -> str:
    url = re.sub(r"^(?:https?://)?(?:www\.)?", "", url.lower())
    return url.rstrip(".,;:!?/")


#: A capitalised word (or run of them) that does not start a sentence, a line or a quote.
_NAME = re.compile(
    r"(?<=[a-z0-9,;)] )(?:[A-Z][\w'’&-]*|[a-z]+[A-Z]\w*)(?: (?:of |the |and |& )?[A-Z][\w'’&-]*)*"
)
#: Capitalised in mid-sentence without naming anything.
_NOT_NAMES = frozenset({"I", "I'm", "I'll", "I've", "I'd", "OK", "Ok"})


def specifics(answer: str, names: bool = False) -> list[Specific]:
    """The specifics ``answer`` states, each once, in order of appearance; with ``names``,
    capitalised names in mid-sentence too."""
    found: list[tuple[int, Specific]] = []
    text = _CITATION.sub(" ", _LIST_MARKER.sub(" ", answer))

    def take(pattern: re.Pattern[str], kind: str, keep: bool = True) -> None:
        nonlocal text
        for match in pattern.finditer(text):
            if kind == "phone" and not _phone_like(match.group()):
                continue
            value = next(g for g in match.groups() if g) if kind == "label" else None
            shown = (value or match.group()).strip()
            if kind == "url":
                shown = shown.rstrip(".,;:!?")
            if keep:
                found.append((match.start(), Specific(kind, shown)))
            # Blank what was taken so a URL's digits are not also a number.
            text = text[: match.start()] + " " * (match.end() - match.start()) + text[match.end() :]

    take(_EMAIL, "email")
    take(_URL, "url")
    take(_QUOTED, "label")
    take(_DATE, "date")
    take(_PHONE, "phone")
    take(_AMOUNT, "amount")
    take(_PERCENT, "percentage")
    take(_QUANTITY, "quantity")
    take(_NUMERIC, "number")
    if names:
        for match in _NAME.finditer(text):
            if match.group() not in _NOT_NAMES:
                found.append((match.start(), Specific("name", match.group())))
    ordered = [specific for _, specific in sorted(found, key=lambda pair: pair[0])]
    return list(dict.fromkeys(ordered))


class Evidence:
    """Everything an answer's specifics may come from, indexed for :func:`unsupported`."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: list[str] = []
        self._lowered = ""
        self._words = " "
        self._numbers: set[str] = set()
        self._amounts: set[str] = set()
        self._phones: set[str] = set()
        self._quantities: set[str] = set()
        self.add(texts)

    def add(self, texts: Iterable[str]) -> Evidence:
        for text in texts:
            self.texts.append(text)
            self._lowered += "\n" + text.lower()
            words = tokens(text)
            self._words += " ".join(words) + " "
            self._numbers.update(w for w in words if w[0].isdigit())
            for match in _AMOUNT.finditer(text):
                self._amounts.add(" ".join(tokens(match.group())))
            for pattern in (_QUANTITY, _WORD_QUANTITY):
                for match in pattern.finditer(text):
                    self._quantities.add(_quantity(match.group(1), match.group(2)))
            self._numbers.update(
                _NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS
            )
            for match in _PHONE.finditer(text):
                if _phone_like(match.group()):
                    self._phones.add(_digits(match.group())[-9:])
        return self

    def plus(self, texts: Iterable[str]) -> Evidence:
        """A copy with ``texts`` added (one question's conversation on top of the articles)."""
        copy = Evidence()
        copy.texts = list(self.texts)
        copy._lowered = self._lowered
        copy._words = self._words
        copy._numbers = set(self._numbers)
        copy._amounts = set(self._amounts)
        copy._phones = set(self._phones)
        copy._quantities = set(self._quantities)
        return copy.add(texts)

    def supports(self, specific: Specific) -> bool:
        kind, text = specific.kind, specific.text
        if kind == "email":
            return text.lower() in self._lowered
        if kind == "date":
            return text in self._lowered
        if kind == "url":
            return _url_key(text) in self._lowered
        if kind == "phone":
            return _digits(text)[-9:] in self._phones or _digits(text) in self._numbers
        if kind in ("label", "percentage", "name"):
            return f" {' '.join(tokens(text))} " in self._words
        if kind == "quantity":
            match = _QUANTITY.fullmatch(text)
            return match is not None and _quantity(*match.groups()) in self._quantities
        if kind == "amount":
            return " ".join(tokens(text)) in self._amounts
        # Percentages, durations, dates, times, plain numbers: every number in it is known.
        numbers = [w for w in tokens(text) if w[0].isdigit()]
        return all(n in self._numbers for n in numbers)


def unsupported(answer: str, evidence: Evidence, names: bool = False) -> list[Specific]:
    """The specifics in ``answer`` that ``evidence`` does not hold."""
    return [s for s in specifics(answer, names) if not evidence.supports(s)]


@dataclass(frozen=True, slots=True)
class Checked:
    """What is left of an answer, and each sentence dropped with the specifics it lacked."""

    text: str
    dropped: tuple[tuple[str, tuple[Specific, ...]], ...] = ()


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]*\s+|\n+")


def _sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end and each line break, the separators kept."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    # "1. " is a list item's marker, not a sentence: it stays with its item.
    merged: list[str] = []
    for piece in pieces:
        if merged and _LIST_MARKER.fullmatch(merged[-1].rstrip(" ")):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def check(text: str, evidence: Evidence) -> Checked:
    """``text`` without the sentences that state a specific (names included) ``evidence``
    lacks."""
    kept: list[str] = []
    dropped = []
    for sentence in _sentences(text):
        missing = unsupported(sentence, evidence, names=True)
        if missing:
            dropped.append((sentence.strip(), tuple(missing)))
            # A dropped sentence keeps its line break, so lists and paragraphs keep their shape.
            if "\n" in sentence and kept and not kept[-1].endswith("\n"):
                kept.append("\n" * sentence.count("\n"))
        else:
            kept.append(sentence)
    return Checked(re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip(), tuple(dropped))


class StreamCheck:
    """The claim check on text that is still being written: :meth:`update` gives what may be
    shown so far (the complete sentences that pass), :meth:`final` the whole checked answer."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence
        self._complete = ""
        self._shown = ""

    def update(self, text: str) -> str:
        ends = [match.end() for match in _SENTENCE_END.finditer(text)]
        # What follows the last sentence end may still be being written.
        complete = text[: ends[-1]] if ends else ""
        # Called for every token: check again only when a sentence has ended.
        if complete != self._complete:
            self._complete = complete
            self._shown = check(complete, self.evidence).text
        return self._shown

    def final(self, text: str) -> Checked:
        return check(text, self.evidence)
