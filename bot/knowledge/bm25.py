"""Keyword retrieval: BM25 (``bm25s``) over stemmed words, forgiving one typo per word.

Customers misspell ("pasword", "refnud"); BM25 alone would miss those words entirely. Each
query word the passages never use is replaced by the most common passage word one edit away
(symmetric-delete lookup: a few dictionary probes per word, no scan of the vocabulary),
unless it is a real word the documents merely do not use ("bake" must not become "make"):
``known`` tells, from the embedding model's English vocabulary.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

__all__ = ["Bm25Index", "words"]

# bm25s sets its own logger to DEBUG at import, which would print a line for every index built.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_MIN_TYPO_LENGTH = 4


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Bm25Index:
    def __init__(
        self, texts: Sequence[str], known: Callable[[str], bool] = lambda word: False
    ) -> None:
        self._known = known
        self._stemmer = Stemmer.Stemmer("english")
        self._stopwords = frozenset(STOPWORDS_EN)
        corpus = [words(text) for text in texts]
        self._frequency = Counter(w for doc in corpus for w in set(doc))
        self._by_delete: dict[str, list[str]] = {}
        for word in self._frequency:
            if len(word) >= _MIN_TYPO_LENGTH - 1:
                for variant in _deletes(word):
                    self._by_delete.setdefault(variant, []).append(word)
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        tokens = [self._terms(doc) for doc in corpus]
        if self.size:
            self._bm25.index(tokens, show_progress=False)

    def _terms(self, tokens: Sequence[str]) -> list[str]:
        kept = [t for t in tokens if t not in self._stopwords]
        return list(self._stemmer.stemWords(kept))

    def correct(self, word: str) -> str:
        """``word``, or the passages' most common word one edit away when they lack it."""
        if word in self._frequency or len(word) < _MIN_TYPO_LENGTH or not word.isalpha():
            return word
        if self._known(word):
            return word
        candidates = set(self._by_delete.get(word, ()))  # a letter too many
        for variant in _deletes(word):
            if variant in self._frequency:  # a letter missing
                candidates.add(variant)
            candidates.update(self._by_delete.get(variant, ()))  # one changed or swapped
        if not candidates:
            return word
        return max(candidates, key=lambda c: (self._frequency[c], c))

    def corrected(self, text: str) -> list[str]:
        return [self.correct(w) for w in words(text)]

    def spellchecked(self, text: str) -> str:
        """``text`` with its misspelt words corrected, or ``text`` itself when none are."""
        found = words(text)
        fixed = [self.correct(w) for w in found]
        return text if fixed == found else " ".join(fixed)

    def terms(self, text: str) -> set[str]:
        """The stemmed words of ``text`` that BM25 matches on: typos corrected, stop words
        left out."""
        return set(self._terms(self.corrected(text)))

    def scores(self, query: str) -> np.ndarray:
        """One BM25 score per passage (0 where no query word occurs)."""
        terms = self._terms(self.corrected(query))
        if not self.size or not terms:
            return np.zeros(self.size, dtype=np.float32)
        ids = self._bm25.get_tokens_ids(terms)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)
