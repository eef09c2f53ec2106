"""Text -> tokens: the pieces the scikit-learn pipeline and the fast path share.

Every callable here is picklable and rebuilds its heavy state (normalizer, jieba dictionary)
lazily, so a pickled pipeline stays small and a loaded model pays only for what it uses.
Word tokens come from rjieba (jieba-rs: jieba's dictionary and algorithm, ~20x faster);
`engine="jieba"` gives the reference tokenizer, and a test checks they agree (HMM off on both).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

_lock = threading.Lock()
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: object) -> str:
    """Any input as a str that can leave Python (lone surrogates -> U+FFFD)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if _SURROGATE_RE.search(text):
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text


def make_normalizer(lexicon: Sequence[str]) -> Any:
    """The project's Normalizer for `lexicon` (classifier.normalize)."""
    from classifier.normalize import Normalizer

    return Normalizer(lexicon=list(lexicon))


class WordTokenizer:
    """jieba word tokens of normalized text, seed terms kept whole; whitespace dropped."""

    def __init__(self, words: Sequence[str] = (), engine: str = "rjieba") -> None:
        self.words = tuple(words)
        self.engine = engine
        self._cut: Any = None

    def _build(self) -> Any:
        with _lock:
            if self._cut is not None:
                return self._cut
            if self.engine == "rjieba":
                import rjieba

                j = rjieba.Jieba()
                for w in self.words:
                    j.add_word(w, None, None)
                cut = j.cut

                def rcut(text: str) -> list[str]:
                    return cut(text, False)

                self._cut = rcut
            elif self.engine == "jieba":
                import jieba

                jieba.setLogLevel(logging.WARNING)  # its start-up chatter is not ours to print
                tk = jieba.Tokenizer()
                tk.initialize()
                for w in self.words:
                    tk.add_word(w)

                def jcut(text: str) -> list[str]:
                    return tk.lcut(text, HMM=False)

                self._cut = jcut
            else:
                raise ValueError(f"unknown tokenizer engine {self.engine!r}")
            return self._cut

    def __call__(self, text: str) -> list[str]:
        cut = self._cut or self._build()
        return [t for t in cut(clean_text(text)) if not t.isspace()]

    def __getstate__(self) -> dict:
        return {"words": self.words, "engine": self.engine}

    def __setstate__(self, state: dict) -> None:
        self.words = tuple(state["words"])
        self.engine = state["engine"]
        self._cut = None


class CharTokenizer:
    """Characters of normalized text, whitespace dropped (the vectorizer makes the n-grams)."""

    def __call__(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


@functools.lru_cache(maxsize=1)
def sound_table() -> dict[int, str]:
    """Han character (a code point in the Basic Multilingual Plane) -> its toneless pinyin
    syllable: pypinyin's first reading, tone marks dropped, ü as v (lazy_pinyin's spelling)."""
    from pypinyin.pinyin_dict import pinyin_dict

    plain: dict[int, str] = {}  # tone-marked letter -> plain letter(s)
    for ch in {c for readings in pinyin_dict.values() for c in readings if not c.isascii()}:
        parts = unicodedata.normalize("NFD", ch)
        base = "".join(c for c in parts if unicodedata.category(c) != "Mn")
        plain[ord(ch)] = "v" if base == "u" and "\u0308" in parts else base
    out: dict[int, str] = {}
    for code, readings in pinyin_dict.items():
        if code <= 0xFFFF:
            out[code] = readings.split(",", 1)[0].translate(plain)
    return out


class SoundTokenizer:
    """Normalized text as sounds: each Han character its toneless syllable (兼, 煎 and 简 are all
    "jian"), any other character itself, whitespace dropped. Their n-grams match a word spelled
    with sound-alike characters (日洁 for 日结, 囿意 for 有意) the character n-grams never saw."""

    def __call__(self, text: str) -> list[str]:
        table = sound_table()
        return [table.get(ord(c), c) for c in text if not c.isspace()]


class ContactTokenizer:
    """Contact features (`classifier.contacts.contact_features`) of normalized text."""

    def __call__(self, text: str) -> list[str]:
        from classifier.contacts import contact_features, extract_contacts

        return list(contact_features(extract_contacts(text)))


def ngrams(tokens: list[str], lo: int, hi: int) -> list[str]:
    """The n-grams scikit-learn's word analyzer makes from `tokens` (joined by a space)."""
    if hi == 1:
        return tokens
    out = list(tokens) if lo == 1 else []
    n_tok = len(tokens)
    for n in range(max(lo, 2), min(hi, n_tok) + 1):
        if n == 2:
            out.extend([a + " " + b for a, b in itertools.pairwise(tokens)])
        elif n == 3:
            trios = zip(tokens, tokens[1:], tokens[2:], strict=False)
            out.extend([a + " " + b + " " + c for a, b, c in trios])
        else:
            out.extend(" ".join(tokens[i : i + n]) for i in range(n_tok - n + 1))
    return out


def _make_normalize_text() -> type:
    # Built on first use: importing scikit-learn costs ~1.5 s, and a loaded model (fast path)
    # never needs it. Pickles still find the class as classifier.features.NormalizeText.
    from sklearn.base import BaseEstimator, TransformerMixin

    class NormalizeText(TransformerMixin, BaseEstimator):
        """Pipeline step: raw texts -> normalized texts (the model only ever sees these)."""

        def __init__(self, lexicon: Sequence[str] = ()) -> None:
            self.lexicon = lexicon

        def fit(self, X: Any, y: Any = None) -> NormalizeText:
            return self

        def _normalizer(self) -> Any:
            n = self.__dict__.get("_normalizer_obj")
            if n is None:
                n = make_normalizer(self.lexicon)
                self.__dict__["_normalizer_obj"] = n
            return n

        def transform(self, X: Any) -> list[str]:
            n = self._normalizer()
            return [clean_text(n.normalize_text(clean_text(x))) for x in X]

        def __getstate__(self) -> dict:
            state = dict(self.__dict__)
            state.pop("_normalizer_obj", None)
            return state

    NormalizeText.__module__ = __name__
    NormalizeText.__qualname__ = "NormalizeText"
    return NormalizeText


def __getattr__(name: str) -> Any:
    if name == "NormalizeText":
        cls = _make_normalize_text()
        globals()["NormalizeText"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
