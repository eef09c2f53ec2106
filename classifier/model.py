"""The model: a scikit-learn pipeline for training, a direct fast path for inference, persistence.

Pipeline: NormalizeText -> FeatureUnion(word TF-IDF over jieba tokens, char n-gram TF-IDF,
contact-feature TF-IDF, sound n-gram TF-IDF over toneless syllables) -> multinomial
LogisticRegression. The fast path (`FastScorer`) does the same arithmetic with dict lookups
(words), a sorted-key search (character and sound n-grams) and one small dense gather; tests hold
it equal to `pipeline.predict_proba` to 1e-9.

A model directory holds `pipeline.joblib` (the fitted pipeline), `fast.npz` + `vocab.json`
(what the fast path needs, loadable without unpickling) and `model.json` (sidecar: version,
training-data hash, parameters, library versions, thresholds, metrics, created time, and the
sha256 of every artifact, checked before anything is read).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import math
import operator
import os
import platform
import random
import re
import struct
import time
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from classifier import features
from classifier.contacts import contact_features, extract_contacts
from classifier.features import (
    CharTokenizer,
    ContactTokenizer,
    SoundTokenizer,
    WordTokenizer,
    clean_text,
    make_normalizer,
    ngrams,
    sound_table,
)
from classifier.generate import Example, GeneratorConfig, corpus_hash, training_corpus
from classifier.seeds import Seeds
from classifier.verdict import Thresholds, Verdict, decide

MODEL_FORMAT = 1
SIDECAR = "model.json"
PIPELINE_FILE = "pipeline.joblib"
FAST_FILE = "fast.npz"
VOCAB_FILE = "vocab.json"
ARTIFACTS = (PIPELINE_FILE, FAST_FILE, VOCAB_FILE)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
VERSIONED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "rjieba", "jieba", "opencc", "pypinyin", "snownlp")
FEATURE_CODE = ("features.py", "normalize.py", "contacts.py")


class ModelError(RuntimeError):
    """A model directory is missing, incomplete, or not one we made."""


@dataclass(frozen=True)
class ModelParams:
    """Everything about the model besides the training data."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (1, 3)
    word_max_features: int = 30_000
    char_max_features: int = 50_000
    # n-grams of toneless syllables (features.SoundTokenizer), None for none. They carry a word
    # across sound-alike spellings (日洁 for 日结) the generator's homophone table never wrote.
    # Measured against the same model without them: generated solicitations with 30% of their
    # Han characters swapped for random same-syllable characters were caught 98.2% (92.2%
    # without); on dev, macro-F1 at equal benign rate +0.017 / -0.005 (4 false positives, seeds
    # 0 / 1) and +0.008 / +0.008 (6). Bigrams alone: 97.5%, the same dev figures (0.824 / 0.845 at
    # 4 / 6 false positives, seed 0, against 0.824 / 0.846), half the sound n-grams to count and
    # fit; with trigrams training took 66-74 s, over the 60 s target.
    sound_ngrams: tuple[int, int] | None = (2, 2)
    sound_max_features: int = 50_000
    min_df: int = 2
    C: float = 4.0
    class_weight: str | None = "balanced"
    # Optional: every templated shape of a label weighs the same in the fit (label totals
    # unchanged; background sentences and admin feedback keep weight 1 each). Measured on dev
    # over two generator seeds: no gain, so off.
    shape_weights: bool = False
    max_iter: int = 300
    engine: str = "rjieba"
    # Thresholds are chosen on leave-shapes-out folds: every label's shapes (templates) are dealt
    # whole into this many folds, background sentences line by line; each fold is scored by a fit
    # on the others, so every line is scored once by a fit that never saw its shape (with a single
    # held-out fifth, which shapes happened to be held out moved the thresholds from 0.74 to 0.99
    # between generator seeds). The shipped model is then refit on everything. Three folds since
    # the corpus grew by half (stop 14): the final fit and three fold fits (each on two thirds) keep
    # two cores busy for about as long as five folds did on the smaller corpus.
    heldout_folds: int = 3
    # The lowest threshold (on 1 - p(ok)), never below the floor, at which held-out benign
    # lines are flagged at most this often: unseen background sentences (real text, like most
    # chat) and unseen templated ok shapes (mostly hard negatives by design: quoted scams,
    # legit ads with contacts, homographs; each shape weighs the same), each with its target.
    # The review target for shapes was set with the real dev set (whose README allows choosing
    # thresholds on it). With the round-6 seeds (terse "term + bare cue" offers, investment tipsters,
    # against friends swapping contacts, legit terse offers and private replies), 2.9% gives review
    # 0.65 and dev's benign rate 1.0% on generator seed 0; 2.8% gave 0.67 (0.8%) and less recall.
    # Before the last two seed additions, seed 1 at 2.9% gave 0.62 and 1.2% (one message more).
    # With sentence marks on templated lines (generator punct_share 0.5) and worn-clothes resale as
    # benign: 0.65 (seed 0) and 0.64 (seed 1), dev benign rate 1.0% on both. Round 7 added benign
    # shapes that read like ads when unseen (local services with a contact, pets looking for a home,
    # activity buddies): 2.9% then gave 0.72 / 0.71 (dev 0.7% / 0.5%); 3.2% gives 0.67 / 0.66 and
    # dev 1.0% on both seeds; 3.5% gave 0.62 / 0.61 and 1.2%. Then first-person income and win
    # stories (and benign money stories against them): 3.2% gave 0.70 / 0.72 (dev 0.7%), 3.3% gives
    # 0.66 on seed 0 (dev 1.0%, none deleted), 3.4% 0.65 (1.2%). Round 8 (porn asked for, clips
    # priced by the piece; against them media asked for, freelancers' offers, family photos and
    # videos, memberships shared): 3.4% gave 0.72 / 0.71 (dev 0.7% / 0.8%, macro-F1 0.792 / 0.804);
    # 3.7% gives 0.66 on seed 0 (dev 1.0%, 0.811) and 1.2% on seed 1 (0.816); 3.8% gave 1.2% on
    # both. The held-out shape curve is flat here (3.95% at 0.60, 3.34% at 0.72), so one benign
    # shape more or less moves the threshold by a few hundredths: the README says so. Then honest
    # 代购 against the prescription-free meds offers: 3.7% gives 0.64 on both seeds (dev 1.0% / 1.2%,
    # macro-F1 0.820 / 0.819). Then ordinary work and its pay (riders' orders, "一天能挣…") and honest
    # in-person gigs: 0.66 / 0.67 (dev 1.0% / 0.8%, 0.821 / 0.812). Sound n-grams (sound_ngrams): 3.7%
    # gives 0.61 on both seeds (dev 0.7% / 1.0%, macro-F1 0.825 / 0.822); the written benign probes
    # flag as many there (13 of 371) as the model before did at 0.66 (12). Sound bigrams only: 0.62,
    # then 0.61 with the styled letters (dev 0.7%, macro-F1 0.821 / 0.822; probes 9 of 371 at 0.61);
    # with Greek and Cyrillic look-alike letters read as Latin (stop 14): 0.61 (dev 0.7%, 0.827); with
    # letters with diacritics read bare: 0.61 (dev 0.7%, 0.829). The corpus grown by half, three folds:
    # 0.57 on seed 0 (dev 0.7%, 0.840), 0.61 on seed 1 (0.8%, 0.825).
    review_target_background: float = 0.01
    review_target_shapes: float = 0.037
    delete_target_background: float = 0.002
    delete_target_shapes: float = 0.01
    # Floors: on the real dev set, 1 - p(ok) >= 0.5 flagged about 1% of benign messages.
    review_floor: float = 0.5
    delete_floor: float = 0.7
    # One unseen look-alike shape the first fit cannot tell apart at any threshold (legit
    # second-hand sales: offer + price + contact) must not set the threshold for everything: its
    # rate counts at most this much in the per-shape mean. Without the cap, which shapes the split
    # held out moved the review threshold from 0.7 to 0.9 between generator seeds.
    shape_rate_cap: float = 0.1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["word_ngrams"] = list(self.word_ngrams)
        d["char_ngrams"] = list(self.char_ngrams)
        d["sound_ngrams"] = None if self.sound_ngrams is None else list(self.sound_ngrams)
        return d


# --- pipeline ---------------------------------------------------------------------------------


def normalized_words(lexicon: Iterable[str], normalizer: Any) -> list[str]:
    """Lexicon terms as they look after normalization, fit to add to jieba's dictionary."""
    out = set()
    for term in lexicon:
        t = normalizer.normalize(term).text.strip()
        if len(t) >= 2 and not any(c.isspace() for c in t):
            out.add(t)
    return sorted(out)


def build_pipeline(lexicon: Sequence[str], words: Sequence[str], params: ModelParams) -> Any:
    """An unfitted pipeline (raw text in, label probabilities out)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    common = {"token_pattern": None, "lowercase": False, "sublinear_tf": True, "dtype": np.float64}
    word = TfidfVectorizer(
        tokenizer=WordTokenizer(words, params.engine),
        ngram_range=tuple(params.word_ngrams),
        min_df=params.min_df,
        max_features=params.word_max_features,
        **common,
    )
    char = TfidfVectorizer(
        tokenizer=CharTokenizer(),
        ngram_range=tuple(params.char_ngrams),
        min_df=params.min_df,
        max_features=params.char_max_features,
        **common,
    )
    parts = [
        ("word", word),
        ("char", char),
        ("contact", TfidfVectorizer(tokenizer=ContactTokenizer(), **common)),
    ]
    if params.sound_ngrams is not None:
        sound = TfidfVectorizer(
            tokenizer=SoundTokenizer(),
            ngram_range=tuple(params.sound_ngrams),
            min_df=params.min_df,
            max_features=params.sound_max_features,
            **common,
        )
        parts.append(("sound", sound))
    return Pipeline(
        [
            ("normalize", features.NormalizeText(lexicon=tuple(lexicon))),
            ("features", FeatureUnion(parts)),
            (
                "clf",
                LogisticRegression(C=params.C, class_weight=params.class_weight, max_iter=params.max_iter),
            ),
        ]
    )


HARD_NEGATIVE_PREFIX = "hard_negative"  # benign shapes written to look like solicitations


def _is_background(ex: Example) -> bool:
    return ex.shape.startswith("background")


def shape_weights(examples: Sequence[Example]) -> np.ndarray:
    """Sample weights: each templated shape of a label gets an equal share of the label's lines;
    background and feedback lines weigh 1."""
    raw = [_is_background(e) or e.shape == "feedback" for e in examples]
    per_shape = Counter((e.label, e.shape) for e, r in zip(examples, raw, strict=True) if not r)
    per_label = Counter(e.label for e, r in zip(examples, raw, strict=True) if not r)
    n_shapes = Counter(label for label, _ in per_shape)
    return np.array(
        [
            1.0 if r else per_label[e.label] / n_shapes[e.label] / per_shape[(e.label, e.shape)]
            for e, r in zip(examples, raw, strict=True)
        ]
    )


def shape_folds(examples: Sequence[Example], folds: int, seed: int) -> list[int]:
    """Deterministic leave-shapes-out folds: the fold (0..folds-1) whose fit leaves each example
    out, or -1 for admin feedback (never held out).

    Per label, every shape (template) lands whole in one fold, so a fold's lines are shapes its fit
    never saw (as most real messages are); a label with fewer than three shapes is spread line by
    line instead, and so are background sentences. Hard negatives and ordinary shapes are dealt
    round the folds separately, so each fold holds them in proportion: which look-alike shapes
    are held out together decides the thresholds, and a chance draw of several of them once moved
    the review threshold from 0.7 to 0.9 between generator seeds.
    """
    shapes: dict[str, set[str]] = {}
    for ex in examples:
        if not _is_background(ex) and ex.shape != "feedback":
            shapes.setdefault(ex.label, set()).add(ex.shape)
    fold_of: dict[tuple[str, str], int] = {}
    for label, names in sorted(shapes.items()):
        if len(names) < 3:
            continue
        groups: dict[bool, list[str]] = {}
        for name in names:
            groups.setdefault(name.startswith(HARD_NEGATIVE_PREFIX), []).append(name)
        for _hard, group in sorted(groups.items()):
            order = sorted(group, key=lambda s: hashlib.sha256(f"{seed}:{label}:{s}".encode()).hexdigest())
            fold_of.update(((label, s), i % folds) for i, s in enumerate(order))
    rng = random.Random(f"split:{seed}")
    out: list[int] = []
    for ex in examples:
        if ex.shape == "feedback":
            out.append(-1)
        elif _is_background(ex) or len(shapes.get(ex.label, ())) < 3:
            out.append(rng.randrange(folds))
        else:
            out.append(fold_of[(ex.label, ex.shape)])
    return out


class BenignRates:
    """Held-out benign lines flagged at a threshold: `at(t)` is (background rate, mean per-shape
    rate of templated lines, each capped at `cap`) with 1 - p(ok) >= t. The lines are grouped by
    shape once (a comparison of every shape name against every line, per threshold, took 4 s of a
    60 s training run)."""

    def __init__(
        self, p_bad: np.ndarray, background: np.ndarray, shapes: np.ndarray, cap: float = 1.0
    ) -> None:
        self.cap = cap
        self._bg_p = p_bad[background]
        templated = ~background
        # shape codes in sorted name order, so the per-shape rates are summed in that order
        self._codes = np.unique(shapes[templated].astype(str), return_inverse=True)[1].reshape(-1)
        self._counts = np.bincount(self._codes)
        self._p = p_bad[templated]

    def at(self, t: float) -> tuple[float, float]:
        bg = float((self._bg_p >= t).mean()) if len(self._bg_p) else 0.0
        hits = np.bincount(self._codes, weights=self._p >= t, minlength=len(self._counts))
        per = [min(self.cap, h / n) for h, n in zip(hits.tolist(), self._counts.tolist(), strict=True)]
        return bg, (sum(per) / len(per) if per else 0.0)


def heldout_benign_curve(
    probs: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    categories: Sequence[str],
    background: Sequence[bool],
    shapes: Sequence[str],
    cap: float = 1.0,
) -> dict[str, list[float]]:
    """{threshold: [background rate, per-shape rate of templated ok lines]} on the held-out
    split, every 0.05 (what the thresholds were chosen from)."""
    y = np.asarray(labels)
    ok = y == "ok"
    cat_idx = [list(classes).index(c) for c in categories]
    p_bad = probs[:, cat_idx].sum(axis=1)[ok]
    bg = np.asarray(background, dtype=bool)[ok]
    sh = np.asarray(shapes, dtype=object)[ok]
    out = {}
    rates = BenignRates(p_bad, bg, sh, cap)
    for t in np.round(np.arange(0.3, 0.96, 0.05), 2):
        r_bg, r_sh = rates.at(float(t))
        out[f"{t:.2f}"] = [round(r_bg, 5), round(r_sh, 5)]
    return out


def choose_thresholds(
    probs: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    categories: Sequence[str],
    params: ModelParams,
    background: Sequence[bool] | None = None,
    shapes: Sequence[str] | None = None,
) -> Thresholds:
    """Delete/review thresholds on 1 - p(ok) from held-out probabilities (see ModelParams).

    One pair for all categories. Per-category pairs (each held-out benign line counted against the
    category it leans to, thresholds lowered category by category for the most held-out recall)
    were tried with the folds: they moved by up to 0.08 when one benign shape was added and did
    no better on the real dev set than one pair, which stayed put across generator seeds.
    `background`: which lines are background sentences; `shapes`: the shape of each line.
    """
    y = np.asarray(labels)
    ok = y == "ok"
    cat_idx = [list(classes).index(c) for c in categories]
    p_bad = probs[:, cat_idx].sum(axis=1)[ok]
    bg = (np.zeros(len(y), dtype=bool) if background is None else np.asarray(background, dtype=bool))[ok]
    sh = (np.full(len(y), "-") if shapes is None else np.asarray(shapes, dtype=object))[ok]
    grid = np.round(np.arange(0.30, 0.995, 0.01), 2)
    at = BenignRates(p_bad, bg, sh, params.shape_rate_cap).at
    rates = {float(t): at(float(t)) for t in grid}

    def lowest(target_bg: float, target_shapes: float, floor: float) -> float:
        for t, (r_bg, r_sh) in rates.items():
            if t >= floor and r_bg <= target_bg and r_sh <= target_shapes:
                return t
        return 0.99

    delete = lowest(params.delete_target_background, params.delete_target_shapes, params.delete_floor)
    review = min(
        delete, lowest(params.review_target_background, params.review_target_shapes, params.review_floor)
    )
    return Thresholds(delete={c: delete for c in categories}, review={c: review for c in categories})


# --- fast path --------------------------------------------------------------------------------

_PARTS = ("word", "char", "contact", "sound")  # the vectorizers, in column order
_bitwise_and, _equal = np.bitwise_and, np.equal
_multiply, _divide, _negative, _matmul = np.multiply, np.true_divide, np.negative, np.matmul
_INT64_LE = np.dtype("<i8")
_PAD = "\uffff" * 3  # after the text, so that every four-unit window lies in the buffer
_TF_TABLE = 4096  # sublinear tf looked up for counts up to this


@functools.lru_cache(maxsize=1024)
def _packer(n: int) -> struct.Struct:
    """n signed 64-bit integers, native order (what np.int64 reads)."""
    return struct.Struct(f"={n}q")


def _char_key(gram: str) -> int | None:
    """A character n-gram (n <= 3) as one integer: its UTF-16 code units, 16 bits each, the first
    lowest (what a little-endian int64 read at the gram's first unit holds, masked to its length).
    None for a gram with U+0000 or U+FFFF (U+0000 would make "a" and "a\0" one key; U+FFFF pads
    the text) or a character outside the Basic Multilingual Plane (two units); without zero units,
    n-grams of different lengths never share a key."""
    units = gram.encode("utf-16-le", "surrogatepass")
    if len(gram) > 3 or len(units) != 2 * len(gram) or "\0" in gram or "\uffff" in gram:
        return None
    return int.from_bytes(units, "little")


def _char_keys_of(grams: Sequence[str]) -> np.ndarray:
    """`_char_key` of every gram, -1 for None: the grams' code points decoded together and
    gathered by numpy (a Python call per gram cost the model's load ~40 ms)."""
    lengths = np.fromiter(map(len, grams), dtype=np.intp, count=len(grams))
    if not len(grams) or (lengths < 1).any() or (lengths > 3).any():
        return np.array([-1 if (key := _char_key(g)) is None else key for g in grams], dtype=np.int64)
    points = np.frombuffer("".join(grams).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    # U+0000, U+FFFF and anything past the BMP (two UTF-16 units) leave a gram without a key;
    # every other code point is its own UTF-16 unit (a lone surrogate too, with surrogatepass).
    unkeyed = np.logical_or.reduceat((points == 0) | (points >= 0xFFFF), starts)
    padded = np.append(points, np.zeros(3, dtype=np.int64))
    keys = np.zeros(len(grams), dtype=np.int64)
    for j in range(3):
        keys |= np.where(lengths > j, padded[starts + j] << (16 * j), 0)
    keys[unkeyed] = -1
    return keys


class _GramKeys(NamedTuple):
    """A vectorizer's n-grams of single characters as sorted integer keys (`_char_key`), with the
    column of each, and per n-gram length the mask that cuts a four-unit window to it."""

    keys: np.ndarray  # sorted, then a sentinel above every key (searchsorted never points past)
    cols: np.ndarray
    masks: np.ndarray  # (number of lengths, 1)


def _gram_keys(grams: Sequence[str], cols: Iterable[int], lo: int, hi: int) -> _GramKeys | None:
    """The key table of `grams` (strings of 1-3 characters) and their columns; None when the
    vectorizer makes longer n-grams (3 x 16 bits fit an int64; those use the dict)."""
    if not 1 <= lo <= hi <= 3:
        return None
    all_keys = _char_keys_of(list(grams))
    keyed = all_keys >= 0
    keys = all_keys[keyed]
    col_arr = np.fromiter(cols, dtype=np.intp, count=len(all_keys))[keyed]
    order = np.argsort(keys)
    masks = np.array([[(1 << 16 * n) - 1] for n in range(lo, hi + 1)], dtype=np.int64)
    return _GramKeys(np.append(keys[order], np.iinfo(np.int64).max), np.append(col_arr[order], -1), masks)


def _keyed_cols(table: _GramKeys, s: str, units: bytes) -> list[int]:
    """Columns of the n-grams of `s` (non-empty; every character one UTF-16 unit, none U+0000 or
    U+FFFF), all of the shortest length left to right, then the next length, ...: `units` is
    `s + _PAD` in UTF-16-LE. At each character a little-endian int64 window of four units, masked
    to n units, is the key of the n-gram starting there (`_char_key`). The windows are one strided
    view of the encoded bytes, every n-gram length a row of it, so one `bitwise_and` makes all the
    keys in the vectorizer's order; the windows that run into the padding hold U+FFFF, in no key."""
    window = np.ndarray((len(table.masks), len(s)), _INT64_LE, units, 0, (0, 2))
    keys = _bitwise_and(window, table.masks)
    idx = table.keys.searchsorted(keys)
    return table.cols.take(idx)[_equal(table.keys.take(idx), keys)].tolist()


def _split_space(term: str) -> list[str]:
    return term.split(" ")


_SOUND_CODES = 0xE000  # syllables of two or more letters as private-use characters from here
_SOUND_CODE_RE = re.compile("[\ue000-\ue3ff]")  # such a character in the text itself


@functools.lru_cache(maxsize=1)
def _sound_codes() -> tuple[dict[str, str], dict[int, str]]:
    """(syllable -> the one character that stands for it, a str.translate table: Han character ->
    that character). A one-letter syllable ("a", "e") stands for itself, as the vectorizer's
    tokens do: "啊" and "a" are one token there."""
    table = sound_table()
    names = sorted({v for v in table.values() if len(v) > 1})
    if len(names) > 0x400:
        raise ModelError("too many syllables for the sound codes")
    code = {name: chr(_SOUND_CODES + i) for i, name in enumerate(names)}
    return code, {cp: code.get(v, v) for cp, v in table.items()}


@functools.lru_cache(maxsize=1)
def _sound_ids() -> tuple[np.ndarray, dict[str, int]]:
    """The sound tokens as integers, for the compiled scorer: per BMP code point its token (a Han
    character's syllable; any other character itself), and per syllable of two or more letters its
    integer. A one-letter syllable is that letter's code point (as a token it is the letter, like
    "a" in the text); a longer one is 0x110000 + its index, above every code point."""
    code, trans = _sound_codes()
    syllables = {name: 0x110000 + ord(c) - _SOUND_CODES for name, c in code.items()}
    by_code = {c: syllables[name] for name, c in code.items()}
    ids = np.arange(0x10000, dtype=np.uint32)
    cps = np.fromiter(trans.keys(), dtype=np.intp, count=len(trans))
    ids[cps] = np.fromiter(
        (by_code.get(t, ord(t[0])) for t in trans.values()), dtype=np.uint32, count=len(trans)
    )
    return ids, syllables


class _Scored(NamedTuple):
    """One text scored: probabilities in class order, and for each feature found (unique
    columns in order of first appearance) its value and its row of coefficients."""

    probs: list[float]
    cols: np.ndarray
    vals: np.ndarray
    weights: np.ndarray


class FastScorer:
    """`pipeline.predict_proba` for one normalized text, done directly.

    Per vectorizer: n-grams -> column indices, counts, sublinear tf x idf, L2 norm; then one
    gather of `coef` rows, the intercept and a softmax. Word n-grams are looked up in a dict.
    Character n-grams (the vectorizer's n-grams of space-joined single characters) become
    integer keys, code points + 1 packed 21 bits each, found with one `searchsorted` in the
    sorted vocabulary keys: a handful of numpy calls per message instead of a string slice and
    a dict lookup per n-gram. A test holds the result equal to `predict_proba` to 1e-9.

    All of that, and the top features, is done in one call of the compiled scorer
    (classifier/_native.c) where it is built; the Python above is the fallback (`native=False`,
    QINGLANG_NATIVE=0, or no C compiler at install), and tests hold the two to identical verdicts.
    """

    def __init__(
        self,
        classes: Sequence[str],
        coef: np.ndarray,  # (n_features, n_classes), C-contiguous
        intercept: np.ndarray,
        idf: np.ndarray,
        vocabs: Mapping[str, Sequence[str]],  # per vectorizer, terms in column order
        words: Sequence[str],
        params: ModelParams,
        native: bool | None = None,
    ) -> None:
        self.classes = tuple(classes)
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.params = params
        self._terms: list[str] = []  # every column's term, in column order
        self._starts: list[int] = []  # first column of each vectorizer, in _PARTS order
        self.maps: dict[str, dict[str, int]] = {}
        for part in _PARTS:
            start = len(self._terms)
            terms = list(vocabs.get(part, ()))
            if part == "char":  # "a b c" (space-joined characters) -> "abc"
                self.maps[part] = {t[::2]: start + i for i, t in enumerate(terms)}
            else:
                self.maps[part] = {t: start + i for i, t in enumerate(terms)}
            self._starts.append(start)
            self._terms.extend(terms)
        if len(self._terms) != self.coef.shape[0] or len(self.idf) != len(self._terms):
            raise ModelError("fast-path arrays do not match the vocabulary")
        if any(
            len(k) * 2 - 1 != len(t) for k, t in zip(self.maps["char"], vocabs.get("char", ()), strict=False)
        ):
            raise ModelError("character vocabulary is not space-joined single characters")
        self._sound_range = None if params.sound_ngrams is None else tuple(params.sound_ngrams)
        self._sound_get = self.maps["sound"].get
        # One row per column: idf, then the coefficients. Both are read for every feature of a
        # message, and one gather of adjacent numbers costs less than two (cache misses).
        self._rows = np.ascontiguousarray(np.column_stack([self.idf, self.coef]))
        self._names: dict[int, str] = {}  # column -> name(column), filled as reasons need them
        self._words = WordTokenizer(words, params.engine)
        self._contacts = ContactTokenizer()
        self._char_range = tuple(params.char_ngrams)
        self._word_range = tuple(params.word_ngrams)
        self._word_get = self.maps["word"].get
        # Word bigrams keyed by their two tokens: a tuple of two strings already hashed (the
        # unigram lookup hashed them) hashes for less than joining and hashing "a b". Exact for
        # tokens without a space, i.e. text without whitespace; bigrams of other text are joined.
        # The tuples hold the unigram keys' own strings where there are some (RSS +1.9 MB, not +5.2).
        one = {t: t for t in self.maps["word"] if " " not in t}
        pairs = {
            (one.get(a, a), one.get(b, b)): j
            for t, j in self.maps["word"].items()
            if t.count(" ") == 1
            for a, b in [t.split(" ")]
        }
        self._pair_get = pairs.get
        self._contact_get = self.maps["contact"].get
        # 1 + log(count) for counts up to _TF_TABLE, computed by np.log as the fallback does.
        self._tf = np.log(np.arange(_TF_TABLE + 1, dtype=np.float64).clip(1.0)) + 1.0
        self._intercept = self.intercept.tolist()
        self._native = self._native_scorer(native, pairs)

    # The key tables of the pure-Python scorer, built on its first use: the compiled scorer keeps
    # its own, and building these cost a loaded model ~0.1 s it did not need.

    @functools.cached_property
    def _char_table(self) -> _GramKeys | None:
        return _gram_keys(list(self.maps["char"]), self.maps["char"].values(), *self._char_range)

    @functools.cached_property
    def _sound_trans(self) -> dict[int, str]:
        return _sound_codes()[1]

    @functools.cached_property
    def _sound_keys(self) -> _GramKeys | None:
        if not self.maps["sound"] or self._sound_range is None:
            return None
        code = _sound_codes()[0]
        # each term ("jian zhi 5") as the string of the characters that stand for its tokens;
        # a term with a stand-in character of its own is found by name only (_sound_cols_of)
        terms = self.maps["sound"]
        if _SOUND_CODE_RE.search("".join(terms)) is not None:  # seldom: filter term by term
            terms = {t: j for t, j in terms.items() if _SOUND_CODE_RE.search(t) is None}
        # map(code.get, tokens, tokens): code.get(t, t) without a Python frame per token
        coded = {
            "".join(map(code.get, ts, ts)): j
            for ts, j in zip(map(_split_space, terms), terms.values(), strict=True)
        }
        return _gram_keys(list(coded), coded.values(), *self._sound_range)

    def _native_scorer(self, native: bool | None, pairs: dict[tuple[str, str], int]) -> Any:
        """The compiled scorer (classifier._native) for this model, or None for the pure-Python one:
        `native` None uses it when it is built and QINGLANG_NATIVE is not 0, True insists on it,
        False never uses it. Models with n-gram ranges it does not do (words beyond (1, 2), character
        n-grams beyond 3) always get the Python scorer."""
        if native is False or (native is None and not native_enabled()):
            return None
        mod = _native_module()
        if mod is None:
            if native:
                raise ModelError("classifier._native is not built (pip install . needs a C compiler)")
            return None
        (w_lo, w_hi), (c_lo, c_hi) = self._word_range, self._char_range
        # the sound vectorizer counts when it has terms and a range (as in _sound_cols_of)
        s_lo, s_hi = self._sound_range if self.maps["sound"] and self._sound_range is not None else (0, 0)
        if not (w_lo == 1 and w_hi in (1, 2) and 1 <= c_lo <= c_hi <= 3 and 0 <= s_lo <= s_hi <= 3):
            if native:
                raise ModelError(
                    "classifier._native does not do n-gram ranges "
                    f"{self._word_range}, {self._char_range}, {self._sound_range}"
                )
            return None
        sound_ids, syllables = _sound_ids() if s_hi else (None, {})
        return mod.Scorer(
            self._rows,
            self._intercept,
            self._tf.tolist(),
            len(self.classes),
            self.maps["word"],
            pairs,
            self.maps["char"],
            self.maps["contact"],
            w_hi,
            c_lo,
            c_hi,
            sound_map=self.maps["sound"] if s_hi else {},
            sound_ids=sound_ids,
            syllables=syllables,
            sound_lo=s_lo,
            sound_hi=s_hi,
        )

    @property
    def native(self) -> bool:
        """Whether this scorer uses the compiled core (classifier._native)."""
        return self._native is not None

    def name(self, col: int) -> str:
        """The feature in column `col`, as "word:...", "char:...", "contact:..." or "sound:..."."""
        return f"{_PARTS[bisect.bisect_right(self._starts, col) - 1]}:{self._terms[col]}"

    def _char_grams(self, text: str, lo: int = 0, hi: int = 0) -> list[str]:
        """The character n-grams of `text` (lo..hi, default the char vectorizer's), unjoined."""
        s = "".join(text.split())  # CharTokenizer drops whitespace characters
        if not lo:
            lo, hi = self._char_range
        n = len(s)
        out: list[str] = list(s) if lo == 1 else []
        for k in range(max(lo, 2), hi + 1):
            out.extend([s[i : i + k] for i in range(n - k + 1)])
        return out

    def _char_hits(self, text: str) -> list[int]:
        """Vocabulary columns of the character n-grams of `text`, in the vectorizer's order
        (all 1-grams left to right, then all 2-grams, ...)."""
        return self._char_cols_of("".join(text.split()))  # CharTokenizer drops whitespace

    def _char_cols_of(self, s: str) -> list[int]:
        """`_char_hits` of `s`, whitespace already dropped. Text the integer keys cannot represent
        (U+0000, U+FFFF, characters outside the BMP) uses the dict."""
        table = self._char_table
        units = (s + _PAD).encode("utf-16-le", "surrogatepass")
        if table is None or len(units) != 2 * len(s) + 6 or "\0" in s or "\uffff" in s:
            get = self.maps["char"].get
            return [j for j in map(get, self._char_grams(s)) if j is not None]
        return _keyed_cols(table, s, units) if s else []

    def _sound_cols_of(self, s: str) -> list[int]:
        """Vocabulary columns of the sound n-grams of `s` (whitespace already dropped), in the
        vectorizer's order: the key search over `s` with every Han character turned into the
        character that stands for its syllable. A text holding such a stand-in itself, or what
        the keys cannot represent, is cut into tokens and looked up by name."""
        table = self._sound_keys
        if table is None or not s:
            return []
        coded = s.translate(self._sound_trans)
        units = (coded + _PAD).encode("utf-16-le", "surrogatepass")
        if (
            len(units) != 2 * len(coded) + 6
            or "\0" in coded
            or "\uffff" in coded
            or _SOUND_CODE_RE.search(s) is not None
        ):
            grams = ngrams(SoundTokenizer()(s), *self._sound_range)  # type: ignore[misc]
            return [j for j in map(self._sound_get, grams) if j is not None]
        return _keyed_cols(table, coded, units)

    def _counted(
        self, text: str, contacts: Sequence[Any] | None
    ) -> tuple[dict[int | None, int], list[int], int]:
        """The vocabulary columns of the n-grams of `text`, counted, in order of first appearance
        (top features break ties by it); where each vectorizer's columns start; how many n-grams
        were found. The vectorizers' column ranges are disjoint, so one dict counts them all."""
        cnt: dict[int | None, int] = {}  # None: unknown n-grams, dropped after each vectorizer
        bounds: list[int] = []
        n_hits = 0
        # Unknown n-grams are counted as None and dropped (Counter's C loop over the lookups,
        # with no filtering pass and no list in between).
        get = self._word_get
        cut = self._words._cut or self._words._build()  # text is clean: WordTokenizer minus clean_text
        s = "".join(text.split())  # CharTokenizer drops whitespace characters
        words = cut(text)
        spaced = len(s) != len(text)
        if spaced:  # without whitespace in the text no token can be whitespace (or hold a space)
            words = [t for t in words if not t.isspace()]
        if self._word_range == (1, 2):
            _count_elements(cnt, map(get, words))
            if spaced:
                _count_elements(cnt, map(get, map(" ".join, itertools.pairwise(words))))
            else:
                _count_elements(cnt, map(self._pair_get, itertools.pairwise(words)))
            n = max(0, 2 * len(words) - 1)
        else:
            grams = ngrams(words, *self._word_range)
            _count_elements(cnt, map(get, grams))
            n = len(grams)
        n_hits += n - cnt.pop(None, 0)
        if cnt:
            bounds.append(0)
        chars = self._char_cols_of(s) if s else []
        if chars:
            bounds.append(len(cnt))
            _count_elements(cnt, chars)
            n_hits += len(chars)
        if self.maps["contact"]:
            if contacts is None:
                tokens = self._contacts(text)
            elif contacts:
                tokens = list(contact_features(contacts))
            else:
                tokens = []
            if tokens:
                start = len(cnt)
                _count_elements(cnt, map(self._contact_get, tokens))
                n_hits += len(tokens) - cnt.pop(None, 0)
                if len(cnt) > start:
                    bounds.append(start)
        sounds = self._sound_cols_of(s)
        if sounds:
            bounds.append(len(cnt))
            _count_elements(cnt, sounds)
            n_hits += len(sounds)
        return cnt, bounds, n_hits

    def _score(self, text: str, contacts: Sequence[Any] | None) -> Any:
        """`text` scored: a _Scored, or the compiled scorer's equivalent (probs, top(), cols, vals)."""
        if self._native is not None:
            # The same pieces _counted feeds its counting: rjieba's tokens of the text (whitespace
            # tokens are dropped in C), the text (whitespace dropped in C) and the contact tokens.
            cut = self._words._cut or self._words._build()
            if not self.maps["contact"]:
                tokens = []
            elif contacts is None:
                tokens = self._contacts(text)
            else:
                tokens = contact_features(contacts) if contacts else []
            return self._native.score(cut(text), text, tokens)
        return self._score_python(text, contacts)

    def _score_python(self, text: str, contacts: Sequence[Any] | None) -> _Scored:
        cnt, bounds, n_hits = self._counted(text, contacts)
        n = len(cnt)
        if not n:
            return self._empty_score()
        # struct packs the columns in one C loop: cheaper than np.fromiter's per-item conversion;
        # when a column repeats, the counts go in the same call (cheaper than bytes(counts))
        repeats = n_hits != n
        if repeats:
            both = np.frombuffer(_packer(2 * n).pack(*cnt, *cnt.values()), dtype=np.int64)
            c, counts = both[:n], both[n:]
        else:
            c = np.frombuffer(_packer(n).pack(*cnt), dtype=np.int64)
        rows = self._rows.take(c, axis=0)
        v = rows[:, 0]  # idf: tf is 1 unless a column repeats
        if repeats:  # sublinear tf, 1 + log(count): from a table of np.log's own values
            try:
                _multiply(v, self._tf.take(counts), out=v)
            except IndexError:  # a count past the table
                v *= np.log(counts.astype(np.float64)) + 1.0
        for start, end in itertools.pairwise([*bounds, n]):  # each vectorizer: unit length
            seg = v[start:end]
            # `seg /= norm` without the operator's dispatch; the same BLAS ddot as `seg @ seg`
            _divide(seg, math.sqrt(seg.dot(seg)), out=seg)
        weights = rows[:, 1:]
        # The intercept added in Python: the same IEEE sums as numpy's, one array call fewer
        # (map with operator.add: no zip, no per-item bytecode).
        z = list(map(operator.add, self._intercept, _matmul(v, weights).tolist()))
        return _Scored(self._softmax(z), c, v, weights)

    def _empty_score(self) -> _Scored:
        empty = np.zeros(0, dtype=np.intp)
        return _Scored(self._softmax(self.intercept.tolist()), empty, np.zeros(0), self.coef[empty])

    def _softmax(self, z: list[float]) -> list[float]:
        if len(self.classes) == 2:  # binary LogisticRegression: one column, sigmoid
            p1 = 1.0 / (1.0 + math.exp(-z[0]))
            return [1.0 - p1, p1]
        top = max(z)
        e = [math.exp(x - top) for x in z]
        total = sum(e)
        return [x / total for x in e]

    def features(self, text: str, contacts: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and TF-IDF values (each vectorizer L2-normalized) of `text`;
        `contacts`: extract_contacts(text) when the caller has it already."""
        s = self._score(text, contacts)
        if type(s) is _Scored:
            return s.cols, s.vals
        return np.array(s.cols, dtype=np.intp), np.array(s.vals, dtype=np.float64)

    def proba(
        self, text: str, contacts: Sequence[Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities in `classes` order, columns, values)."""
        s = self._score(text, contacts)
        if type(s) is _Scored:
            return np.array(s.probs), s.cols, s.vals
        return np.array(s.probs), np.array(s.cols, dtype=np.intp), np.array(s.vals, dtype=np.float64)

    def top_features(self, cols: np.ndarray, vals: np.ndarray, label: str, k: int = 5) -> list[dict]:
        """The k features that pushed hardest toward `label` (value x weight)."""
        cols = np.asarray(cols, dtype=np.intp)
        return self._top(_Scored([], cols, vals, self.coef[cols]), label, k)

    def _top(self, s: Any, label: str, k: int = 5) -> list[dict]:
        if type(s) is not _Scored:  # the compiled scorer's: it ranks, we name and round
            names = self._names
            out = []
            for col, x in s.top(self.classes.index(label), k):
                name = names.get(col)
                if name is None:
                    name = names[col] = self.name(col)
                out.append({"feature": name, "weight": _round4(x)})
            return out
        if not len(s.cols):
            return []
        ci = self.classes.index(label)
        if s.weights.shape[1] == 1:  # binary: the single column pushes toward classes[1]
            contrib = s.vals * s.weights[:, 0] * (1.0 if ci == 1 else -1.0)
        else:
            contrib = _multiply(s.vals, s.weights[:, ci])
        # The largest first, ties in order of first appearance (a stable sort).
        order = _negative(contrib).argsort(kind="stable")[:k]
        names = self._names
        out = []
        # .item() for the few read (up to k, fewer once one is not positive): cheaper than
        # a take and a tolist of each array
        value_at, col_at = contrib.item, s.cols.item
        for i in order.tolist():
            x = value_at(i)
            if x <= 0:
                break  # the rest are smaller
            col = col_at(i)
            name = names.get(col)
            if name is None:
                name = names[col] = self.name(col)
            out.append({"feature": name, "weight": _round4(x)})
        return out


def native_enabled() -> bool:
    """False when QINGLANG_NATIVE is 0 (or false/no/off): the pure-Python scorer, built or not."""
    return os.environ.get("QINGLANG_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _native_module() -> Any:
    """classifier._native, or None where it was not built (no C compiler at install)."""
    try:
        from classifier import _native
    except ImportError:
        return None
    return _native


def _round4(x: float) -> float:
    """`round(x, 4)`, without its decimal-string round trip when that is provably not needed.

    round(x, 4) is the double nearest m / 10**4, m the integer nearest to the exact x * 10**4
    (half to even). y = x * 1e4 is within y * 2**-53 of that product, so when y is further than
    twice that from a half-integer, the integer nearest y is m, and `m / 10000.0` (m exact as a
    double, one correctly rounded division) is that same double. Otherwise: `round` itself.
    """
    y = x * 10000.0
    if 0.0 < y < 4503599627370496.0:  # 2**52: m is exact as a double
        m = round(y)
        if abs(abs(y - m) - 0.5) > y * 2.220446049250313e-16:  # 2**-52
            return m / 10000.0
    return round(x, 4)


def fast_arrays(pipeline: Any) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The fitted pipeline's numbers, laid out for FastScorer."""
    union = dict(pipeline.named_steps["features"].transformer_list)
    clf = pipeline.named_steps["clf"]
    idfs: list[np.ndarray] = []
    vocabs: dict[str, list[str]] = {}
    offset = 0
    for part in _PARTS:
        if part not in union:
            vocabs[part] = []
            continue
        vec = union[part]
        terms = [""] * len(vec.vocabulary_)
        for t, i in vec.vocabulary_.items():
            terms[i] = t
        vocabs[part] = terms
        idfs.append(vec.idf_)
        offset += len(terms)
    arrays = {
        "coef": np.ascontiguousarray(clf.coef_.T, dtype=np.float64),
        "intercept": clf.intercept_.astype(np.float64),
        "idf": np.concatenate(idfs).astype(np.float64),
    }
    return arrays, vocabs


# --- the classifier ---------------------------------------------------------------------------


class _Identity:
    """Stand-in for a Normalized result when normalization itself failed."""

    def __init__(self, text: str) -> None:
        self.original = text
        self.text = text

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        return start, end

    def full(self) -> _Identity:
        return self


class Classifier:
    """A loaded model: `classify(text) -> Verdict` (docs/interfaces.md)."""

    def __init__(
        self,
        scorer: FastScorer,
        *,
        lexicon: Sequence[tuple[str, str]],
        categories: Sequence[str],
        thresholds: Thresholds,
        version: str,
        sidecar: Mapping[str, Any],
        directory: Path | None = None,
        pipeline: Any = None,
    ) -> None:
        self.scorer = scorer
        self.categories = tuple(categories)
        self.thresholds = thresholds
        self.version = version
        self.sidecar = dict(sidecar)
        self.directory = directory
        self._pipeline = pipeline
        self.normalizer = make_normalizer([t for t, _ in lexicon])
        # Seed terms as they look after normalization, indexed by first character.
        self._terms: dict[str, list[tuple[str, str, str]]] = {}
        seen = set()
        for term, cat in lexicon:
            try:
                nt = self.normalizer.normalize(term).text.strip()
            except Exception:
                continue
            if nt and (nt, cat) not in seen:
                seen.add((nt, cat))
                self._terms.setdefault(nt[0], []).append((nt, term, cat))
        for lst in self._terms.values():
            lst.sort(key=lambda x: (-len(x[0]), x[0], x[2]))
        # Where some term may start: a first character of a term, then a second character of
        # one (a term's own pair is checked per position below). Two character classes let `re`
        # skip in C to the candidates; a branch per first character with a lookahead for the
        # rest made `re` try all 254 branches in turn at every candidate (~30k instructions a
        # message). Each match is one character long, so finditer finds overlapping starts.
        terms = [nt for lst in self._terms.values() for nt, _t, _c in lst]
        firsts = "".join(map(re.escape, sorted(self._terms)))
        seconds = "".join(map(re.escape, sorted({nt[1] for nt in terms if len(nt) > 1})))
        self._term_re = None
        # The terms to try at a candidate, by its first two characters (most candidates have
        # none), or by the first alone when some term is one character long.
        self._prefix = 2
        if any(len(nt) == 1 for nt in terms):  # a one-character term: every first character
            self._term_re = re.compile(f"[{firsts}]")
            self._prefix = 1
        elif terms:
            self._term_re = re.compile(f"[{firsts}](?=[{seconds}])")
        self._by_prefix: dict[str, list[tuple[str, str, str]]] = {}
        for lst in self._terms.values():
            for entry in lst:  # in the order of self._terms: found terms keep their order
                self._by_prefix.setdefault(entry[0][: self._prefix], []).append(entry)

    @property
    def pipeline(self) -> Any:
        """The fitted scikit-learn pipeline (the reference the fast path must equal)."""
        if self._pipeline is None:
            if self.directory is None:
                raise ModelError("this classifier has no pipeline attached")
            self._pipeline = load_pipeline(self.directory, self.sidecar)
        return self._pipeline

    def _normalize(self, text: str) -> Any:
        try:
            return self.normalizer.normalize(text)
        except Exception:  # the normalizer promises not to raise; a verdict matters more
            return _Identity(text)

    def _normalize_lazy(self, text: str) -> Any:
        try:
            return self.normalizer.normalize_lazy(text)
        except Exception:
            return _Identity(text)

    def _normalize_text(self, text: str) -> str:
        try:
            return self.normalizer.normalize_text(text)
        except Exception:
            return text

    def _find_terms(self, text: str) -> list[tuple[str, str, int, int]]:
        """(term, category, start, end) of seed terms in normalized `text`: at each position
        every term that starts there, then on past the longest; short Latin terms (sd, zx)
        only as whole words."""
        if self._term_re is None:
            return []
        found = []
        n = len(text)
        nxt = 0
        k = self._prefix
        by_prefix = self._by_prefix
        for m in self._term_re.finditer(text):
            i = m.start()
            if i < nxt:
                continue
            step = 1
            for nt, _term, cat in by_prefix.get(text[i : i + k], ()):
                if text.startswith(nt, i):
                    end = i + len(nt)
                    if nt.isascii() and (
                        (i > 0 and text[i - 1].isascii() and text[i - 1].isalnum())
                        or (end < n and text[end].isascii() and text[end].isalnum())
                    ):
                        continue
                    found.append((nt, cat, i, end))
                    step = max(step, len(nt))
            nxt = i + step
        return found

    def _match_terms(self, norm: Any) -> list[dict]:
        out = []
        for nt, cat, i, end in self._find_terms(norm.text):
            os_, oe = norm.to_original(i, end)
            out.append({"term": nt, "category": cat, "start": int(os_), "end": int(oe)})
        return out

    def _contacts(self, norm: Any) -> tuple[list[Any] | None, list[dict]]:
        contacts = _extract_contacts(norm.text)
        if contacts is None:
            return None, []
        out = []
        for c in contacts:
            os_, oe = norm.to_original(c.start, c.end)
            out.append({"kind": c.kind, "value": c.value, "start": int(os_), "end": int(oe)})
        return contacts, out

    def scores(self, text: str) -> dict[str, float]:
        """Every label's probability for `text`."""
        scored = self.scorer._score(clean_text(self._normalize_text(_clean(text))), None)
        return dict(zip(self.scorer.classes, scored.probs, strict=True))

    def classify(
        self,
        text: str,
        thresholds: Mapping[str, float] | None = None,
        *,
        reasons: Literal["all", "flagged"] = "all",
    ) -> Verdict:
        """The verdict on one message; `thresholds` overrides delete thresholds per category.

        `reasons="flagged"` leaves the reasons of a pass verdict empty (`{}`): a caller that records
        only delete and review verdicts skips the term search, offset map and top features (about a
        fifth of the work). Label, score, scores and action are the same either way."""
        text = _clean(text)
        norm = self._normalize_lazy(text)
        ntext = norm.text
        contacts = _extract_contacts(ntext)
        scored = self.scorer._score(ntext, [] if contacts is None else contacts)
        scores = dict(zip(self.scorer.classes, scored.probs, strict=True))
        label, action = decide(scores, self.categories, self.thresholds.with_overrides(thresholds))
        if action == "pass" and reasons == "flagged":
            return Verdict(
                label=label, score=scores[label], action=action, scores=scores, model_version=self.version
            )
        terms = self._find_terms(ntext)
        term_reasons: list[dict] = []
        contact_reasons: list[dict] = []
        if terms or contacts:
            # Positions in the original text need the offset map: built only when there is
            # something to point at (most messages have neither).
            try:
                norm = norm.full()
            except Exception:  # the normalizer promises not to raise; a verdict matters more
                norm = _Identity(text)
            for nt, cat, i, end in terms:
                os_, oe = norm.to_original(i, end)
                term_reasons.append({"term": nt, "category": cat, "start": int(os_), "end": int(oe)})
            for c in contacts or ():
                os_, oe = norm.to_original(c.start, c.end)
                contact_reasons.append({"kind": c.kind, "value": c.value, "start": int(os_), "end": int(oe)})
        return Verdict(
            label=label,
            score=scores[label],
            action=action,
            scores=scores,
            reasons={
                "terms": term_reasons,
                "features": self.scorer._top(scored, label),
                "contacts": contact_reasons,
            },
            model_version=self.version,
        )

    def classify_many(
        self, texts: Iterable[str], thresholds: Mapping[str, float] | None = None
    ) -> list[Verdict]:
        """`classify` for each text, in order."""
        return [self.classify(t, thresholds) for t in texts]


# Every contact pattern (classifier.contacts) needs one of: three digits in a row (phone and QQ
# numbers), a letter and four id characters (WeChat ids, Telegram handles, wxid_), a letter or
# digit, a dot and two letters (a domain and its top-level domain, t.me), or "://" (links). Without
# any of them there is nothing to extract (a lone letter, "加v", "1.5": of the bench messages 40%
# have a letter or three digits, 33% one of these). Letters are what [a-z] and
# full-width [a-z] match under IGNORECASE, as in classifier.contacts (U+0130, U+0131, U+017F and
# U+212A included), spelled out: IGNORECASE would keep `re` from skipping in C to where a match
# can start, and so would a pattern that does not open with one class (the first character,
# then which alternative it opens).
_LETTER = "a-zA-Z\uff41-\uff5a\uff21-\uff3a\u0130\u0131\u017f\u212a"
_DIGIT = "0-9\uff10-\uff19"
_MAYBE_CONTACT = re.compile(
    f"[{_LETTER}{_DIGIT}:](?:(?<=[{_DIGIT}])[{_DIGIT}]{{2}}|(?<=[{_LETTER}])[-_{_LETTER}0-9]{{4}}"
    f"|(?<=[{_LETTER}0-9])\\.[{_LETTER}]{{2}}|(?<=:)//)"
)


def _extract_contacts(text: str) -> list[Any] | None:
    """extract_contacts(text), skipped for text that no contact pattern can match; None on
    failure."""
    if _MAYBE_CONTACT.search(text) is None:
        return []
    try:
        return list(extract_contacts(text))
    except Exception:
        return None


def _clean(text: Any) -> str:
    """clean_text(text): lone surrogates cannot leave Python (rjieba is Rust)."""
    if type(text) is str:
        # Encoding to UTF-8 fails only on a surrogate, and costs less than clean_text's search.
        try:
            text.encode()
        except UnicodeEncodeError:
            pass
        else:
            return text
    return clean_text(text)


# --- training ---------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def feature_code_digest() -> str:
    """sha256 of the code and data that turn text into features (features.py, normalize.py,
    contacts.py, classifier/data/*): a model trained with other code is stale."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    names = [*FEATURE_CODE, *sorted(f"data/{p.name}" for p in (root / "data").glob("*") if p.is_file())]
    for name in names:
        p = root / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.exists() else b""))
    return h.hexdigest()


def version_hash(
    data_hash: str, gen: GeneratorConfig, params: ModelParams, libs: Mapping[str, str], code: str
) -> str:
    blob = json.dumps(
        {
            "format": MODEL_FORMAT,
            "data": data_hash,
            "generator": gen.to_dict(),
            "params": params.to_dict(),
            "libraries": dict(libs),
            "feature_code": code,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """A fitted model and what to record about it."""

    pipeline: Any
    classes: tuple[str, ...]
    categories: tuple[str, ...]
    lexicon: list[tuple[str, str]]
    words: list[str]
    thresholds: Thresholds
    params: ModelParams
    generator: GeneratorConfig
    data_hash: str
    seeds_digest: str
    version: str
    metrics: dict = field(default_factory=dict)


def _logreg(params: ModelParams) -> Any:
    """The classifier step, unfitted."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=params.C, class_weight=params.class_weight, max_iter=params.max_iter)


def _fit_logreg(params: ModelParams, X: Any, y: np.ndarray, sample_weight: np.ndarray) -> Any:
    lr = _logreg(params)
    lr.fit(X, y, sample_weight=sample_weight)
    return lr


def train(
    seeds: Seeds,
    gen: GeneratorConfig | None = None,
    params: ModelParams | None = None,
    *,
    extra: Sequence[Example] = (),
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Generate the corpus, score every line with a fit that never saw its shape (folds), choose
    thresholds on those scores, refit on everything."""
    gen = gen or GeneratorConfig()
    params = params or ModelParams()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    say("generating examples")
    corpus = training_corpus(seeds, gen, extra)
    data_hash = corpus_hash(corpus)
    lexicon = seeds.lexicon_terms()
    terms = sorted({t for t, _ in lexicon})
    normalizer = make_normalizer(terms)
    words = normalized_words(terms, normalizer)
    folds = np.array(shape_folds(corpus, params.heldout_folds, gen.seed))
    pipe = build_pipeline(terms, words, params)
    say(f"vectorizing {len(corpus)} examples")
    # Normalize and vectorize once; the vocabulary and idf come from all lines (no labels).
    normalized = pipe.named_steps["normalize"].transform([e.text for e in corpus])
    union = pipe.named_steps["features"]
    # The word and character vectorizers fitted side by side (the same matrices); the saved
    # pipeline keeps n_jobs=None, so the model files do not change.
    union.set_params(n_jobs=min(2, os.cpu_count() or 1))
    X = union.fit_transform(normalized)
    union.set_params(n_jobs=None)
    for _, vec in union.transformer_list:
        if hasattr(vec, "stop_words_"):
            del vec.stop_words_  # terms cut by max_features/min_df: large and unused
    y = np.array([e.label for e in corpus])
    sw = shape_weights(corpus) if params.shape_weights else np.ones(len(corpus))
    # Each fold is fitted from scratch (a start from another fold's fit, which saw this fold's
    # shapes, would leak them into its scores), the folds side by side on the machine's cores.
    # The fit on everything (the shipped one) needs no fold's result, so it runs in the same batch,
    # first, as the longest task: five folds and a final fit warm-started from the first fold left
    # one core idle for the last fold and then ran the final fit alone (8 s of the 66 s).
    from joblib import Parallel, delayed

    outs = [folds == f for f in range(params.heldout_folds)]
    say(f"fitting {params.heldout_folds} leave-shapes-out folds and the final fit on {len(corpus)} examples")
    final, *fits = Parallel(n_jobs=min(len(outs) + 1, os.cpu_count() or 1))(
        [delayed(_fit_logreg)(params, X, y, sw)]
        + [delayed(_fit_logreg)(params, X[~out], y[~out], sw[~out]) for out in outs]
    )
    probs_all = np.zeros((len(corpus), len(fits[0].classes_)))
    for out, fit in zip(outs, fits, strict=True):
        probs_all[out] = fit.predict_proba(X[out])
    fit = fits[0]
    classes = tuple(str(c) for c in fit.classes_)
    from classifier import CATEGORIES

    order = {c: i for i, c in enumerate(CATEGORIES)}
    categories = tuple(
        sorted((c for c in seeds.categories if c in classes), key=lambda c: (order.get(c, 99), c))
    )
    say("choosing thresholds on the held-out shapes")
    mask = folds >= 0
    held = [e for e, m_ in zip(corpus, mask, strict=True) if m_]
    probs = probs_all[mask]
    held_bg = [_is_background(e) for e in held]
    thresholds = choose_thresholds(
        probs, [e.label for e in held], classes, categories, params, held_bg, [e.shape for e in held]
    )
    metrics = heldout_metrics(probs, held, classes, categories, thresholds)
    metrics["heldout_benign_rates"] = heldout_benign_curve(
        probs,
        [e.label for e in held],
        classes,
        categories,
        held_bg,
        [e.shape for e in held],
        params.shape_rate_cap,
    )
    pipe.steps[-1] = ("clf", final)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    metrics["n_train"] = len(corpus)
    metrics["n_heldout"] = len(held)
    libs = library_versions()
    version = version_hash(data_hash, gen, params, libs, feature_code_digest())
    return TrainResult(
        pipe,
        classes,
        categories,
        lexicon,
        words,
        thresholds,
        params,
        gen,
        data_hash,
        seeds.digest,
        version,
        metrics,
    )


def heldout_metrics(
    probs: np.ndarray,
    held: Sequence[Example],
    classes: Sequence[str],
    categories: Sequence[str],
    th: Thresholds,
) -> dict:
    """Per-category precision/recall at the chosen thresholds, and the benign flag rate."""
    preds = []
    for row in probs:
        label, action = decide(dict(zip(classes, row, strict=True)), tuple(categories), th)
        preds.append(label if action != "pass" else "ok")
    y = [e.label for e in held]
    out: dict[str, Any] = {"per_label": {}}
    for c in [*categories, "ok"]:
        tp = sum(1 for a, b in zip(y, preds, strict=True) if a == c and b == c)
        pp = sum(1 for b in preds if b == c)
        ap = sum(1 for a in y if a == c)
        prec = tp / pp if pp else 0.0
        rec = tp / ap if ap else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out["per_label"][c] = {
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(f1, 4),
            "n": ap,
        }
    oks = [b for a, b in zip(y, preds, strict=True) if a == "ok"]
    out["heldout_benign_flag_rate"] = round(sum(b != "ok" for b in oks) / max(1, len(oks)), 5)
    out["heldout_macro_f1"] = round(float(np.mean([out["per_label"][c]["f1"] for c in categories])), 4)
    return out


# --- persistence ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(result: TrainResult, directory: str | Path) -> Path:
    """Write the model directory; returns it."""
    import joblib

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(result.pipeline, out / PIPELINE_FILE, compress=3)
    arrays, vocabs = fast_arrays(result.pipeline)
    with (out / FAST_FILE).open("wb") as f:
        # The stub's keyword-only allow_pickle: bool makes mypy reject any **dict[str, ndarray];
        # the keys here are fast_arrays' fixed names, never allow_pickle.
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    vocab_doc = {"vocabs": vocabs, "words": result.words, "lexicon": [list(p) for p in result.lexicon]}
    (out / VOCAB_FILE).write_text(
        json.dumps(vocab_doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    sidecar = {
        "format": MODEL_FORMAT,
        "version": result.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": list(result.classes),
        "categories": list(result.categories),
        "thresholds": result.thresholds.to_dict(),
        "training_data_sha256": result.data_hash,
        "seeds_sha256": result.seeds_digest,
        "feature_code_sha256": feature_code_digest(),
        "generator": result.generator.to_dict(),
        "params": result.params.to_dict(),
        "libraries": library_versions(),
        "metrics": result.metrics,
        "n_features": int(arrays["coef"].shape[0]),
        "artifacts": {name: _sha256(out / name) for name in ARTIFACTS},
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return out


def read_sidecar(directory: str | Path) -> dict:
    path = Path(directory) / SIDECAR
    if not path.is_file():
        raise ModelError(f"{directory}: no {SIDECAR}; not a qinglang model directory")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != MODEL_FORMAT:
        raise ModelError(f"{directory}: model format {doc.get('format')!r}, expected {MODEL_FORMAT}")
    return doc


def _verified(directory: Path, sidecar: Mapping[str, Any], name: str) -> Path:
    path = directory / name
    expected = sidecar.get("artifacts", {}).get(name)
    if not path.is_file() or expected is None:
        raise ModelError(f"{directory}: missing {name}")
    if _sha256(path) != expected:
        raise ModelError(f"{path}: content digest does not match {SIDECAR}; refusing to load it")
    return path


def load_pipeline(directory: str | Path, sidecar: Mapping[str, Any] | None = None) -> Any:
    """Unpickle the fitted pipeline, only after its digest matches the sidecar."""
    import joblib

    d = Path(directory)
    sc = sidecar or read_sidecar(d)
    return joblib.load(_verified(d, sc, PIPELINE_FILE))


def params_from_dict(d: Mapping[str, Any]) -> ModelParams:
    known = {f for f in ModelParams.__dataclass_fields__}
    kw = {k: v for k, v in d.items() if k in known}
    for k in ("word_ngrams", "char_ngrams", "sound_ngrams"):
        if kw.get(k) is not None:
            kw[k] = tuple(kw[k])
    kw.setdefault("sound_ngrams", None)  # models made before sound n-grams have none
    return replace(ModelParams(), **kw)


def load(path: str | Path | None = None, *, native: bool | None = None) -> Classifier:
    """Load a model directory (default: the model shipped in classifier/default_model/); `native`:
    use the compiled scorer (None: when built and QINGLANG_NATIVE is not 0; see FastScorer)."""
    d = Path(path) if path is not None else DEFAULT_MODEL_DIR
    sidecar = read_sidecar(d)
    vocab = json.loads(_verified(d, sidecar, VOCAB_FILE).read_text(encoding="utf-8"))
    with np.load(_verified(d, sidecar, FAST_FILE), allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("coef", "intercept", "idf")}
    params = params_from_dict(sidecar["params"])
    scorer = FastScorer(
        sidecar["classes"],
        arrays["coef"],
        arrays["intercept"],
        arrays["idf"],
        vocab["vocabs"],
        vocab["words"],
        params,
        native,
    )
    th = sidecar["thresholds"]
    return Classifier(
        scorer,
        lexicon=[(t, c) for t, c in vocab["lexicon"]],
        categories=sidecar["categories"],
        thresholds=Thresholds(delete=th["delete"], review=th["review"]),
        version=sidecar["version"],
        sidecar=sidecar,
        directory=d,
    )


def from_result(result: TrainResult, *, native: bool | None = None) -> Classifier:
    """A Classifier straight from a training result (no files); `native` as in `load`."""
    arrays, vocabs = fast_arrays(result.pipeline)
    scorer = FastScorer(
        result.classes,
        arrays["coef"],
        arrays["intercept"],
        arrays["idf"],
        vocabs,
        result.words,
        result.params,
        native,
    )
    return Classifier(
        scorer,
        lexicon=result.lexicon,
        categories=result.categories,
        thresholds=result.thresholds,
        version=result.version,
        sidecar={"version": result.version},
        pipeline=result.pipeline,
    )
