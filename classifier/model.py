"""The model: a scikit-learn pipeline for training, a direct fast path for inference, persistence.

Pipeline: NormalizeText -> FeatureUnion(word TF-IDF over jieba tokens, char n-gram TF-IDF,
contact-feature TF-IDF) -> multinomial LogisticRegression. The fast path (`FastScorer`) does the
same arithmetic with dict lookups and one small dense gather; a test holds it equal to
`pipeline.predict_proba` to 1e-9.

A model directory holds `pipeline.joblib` (the fitted pipeline), `fast.npz` + `vocab.json`
(what the fast path needs, loadable without unpickling) and `model.json` (sidecar: version,
training-data hash, parameters, library versions, thresholds, metrics, created time, and the
sha256 of every artifact, checked before anything is read).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from classifier import features
from classifier.features import (
    CharTokenizer,
    ContactTokenizer,
    WordTokenizer,
    clean_text,
    make_normalizer,
    ngrams,
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
    word_max_features: int = 60_000
    char_max_features: int = 100_000
    min_df: int = 2
    C: float = 4.0
    class_weight: str | None = "balanced"
    max_iter: int = 300
    engine: str = "rjieba"
    heldout_share: float = 0.15
    # Thresholds: the lowest probability at which at most this share of held-out `ok` lines
    # would be flagged, never below the floor.
    delete_target_fpr: float = 0.001
    review_target_fpr: float = 0.005
    delete_floor: float = 0.8
    review_floor: float = 0.6

    def to_dict(self) -> dict:
        d = asdict(self)
        d["word_ngrams"] = list(self.word_ngrams)
        d["char_ngrams"] = list(self.char_ngrams)
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


def contacts_available() -> bool:
    """Whether classifier.contacts exists (contact features are used only when it does)."""
    import importlib.util

    return importlib.util.find_spec("classifier.contacts") is not None


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
    parts = [("word", word), ("char", char)]
    if contacts_available():
        parts.append(("contact", TfidfVectorizer(tokenizer=ContactTokenizer(), **common)))
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


def split_heldout(
    examples: Sequence[Example], share: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic stratified split (per label and shape) into train and held-out."""
    groups: dict[tuple[str, str], list[Example]] = {}
    for ex in examples:
        groups.setdefault((ex.label, ex.shape), []).append(ex)
    rng = random.Random(f"split:{seed}")
    train, held = [], []
    for key in sorted(groups):
        items = groups[key]
        idx = list(range(len(items)))
        rng.shuffle(idx)
        k = round(len(items) * share)
        chosen = set(idx[:k])
        for i, ex in enumerate(items):
            (held if i in chosen else train).append(ex)
    return train, held


def choose_thresholds(
    probs: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    categories: Sequence[str],
    params: ModelParams,
) -> Thresholds:
    """Per-category delete/review thresholds from held-out probabilities (see ModelParams)."""
    y = np.asarray(labels)
    ok = y == "ok"
    cat_idx = [list(classes).index(c) for c in categories]
    cat_probs = probs[:, cat_idx]
    p_bad = cat_probs.sum(axis=1)
    best = np.asarray(categories)[np.argmax(cat_probs, axis=1)]
    delete, review = {}, {}
    grid = np.round(np.arange(0.30, 0.995, 0.01), 2)
    n_ok = max(1, int(ok.sum()))
    for c in categories:
        p_ok = p_bad[ok & (best == c)]

        def lowest(target: float, floor: float, p_ok: np.ndarray = p_ok) -> float:
            for t in grid:
                if t >= floor and (p_ok >= t).sum() / n_ok <= target:
                    return float(t)
            return 0.99

        delete[c] = lowest(params.delete_target_fpr, params.delete_floor)
        review[c] = min(delete[c], lowest(params.review_target_fpr, params.review_floor))
    return Thresholds(delete=delete, review=review)


# --- fast path --------------------------------------------------------------------------------


class FastScorer:
    """`pipeline.predict_proba` for one normalized text, done directly.

    Per vectorizer: n-grams -> column indices (one dict lookup each, in C via `map`), counts,
    sublinear tf x idf, L2 norm; then one small gather of `coef` rows, the intercept and a
    softmax. Character n-grams are sliced from the text with whitespace removed (the same
    n-grams as the vectorizer's space-joined character tokens; the vocabulary is re-keyed at
    load). A test holds the result equal to `predict_proba` to 1e-9.
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
    ) -> None:
        self.classes = tuple(classes)
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.params = params
        self.names: list[str] = []
        self.maps: dict[str, dict[str, int]] = {}
        for part in ("word", "char", "contact"):
            start = len(self.names)
            terms = list(vocabs.get(part, ()))
            if part == "char":  # "a b c" (space-joined characters) -> "abc"
                self.maps[part] = {t[::2]: start + i for i, t in enumerate(terms)}
            else:
                self.maps[part] = {t: start + i for i, t in enumerate(terms)}
            self.names.extend(f"{part}:{t}" for t in terms)
        if len(self.names) != self.coef.shape[0] or len(self.idf) != len(self.names):
            raise ModelError("fast-path arrays do not match the vocabulary")
        if any(len(k) * 2 - 1 != len(t) for k, t in zip(self.maps["char"], vocabs.get("char", ()), strict=False)):
            raise ModelError("character vocabulary is not space-joined single characters")
        self._words = WordTokenizer(words, params.engine)
        self._contacts = ContactTokenizer()
        self._char_range = tuple(params.char_ngrams)
        self._word_range = tuple(params.word_ngrams)

    def _char_grams(self, text: str) -> list[str]:
        s = "".join(text.split())  # CharTokenizer drops whitespace characters
        lo, hi = self._char_range
        n = len(s)
        out: list[str] = list(s) if lo == 1 else []
        for k in range(max(lo, 2), hi + 1):
            out.extend([s[i : i + k] for i in range(n - k + 1)])
        return out

    def features(self, text: str, contacts: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and TF-IDF values (each vectorizer L2-normalized) of `text`;
        `contacts`: extract_contacts(text) when the caller has it already."""
        parts = [
            (self.maps["word"], ngrams(self._words(text), *self._word_range)),
            (self.maps["char"], self._char_grams(text)),
        ]
        if self.maps["contact"]:
            if contacts is None:
                parts.append((self.maps["contact"], self._contacts(text)))
            elif contacts:
                from classifier.contacts import contact_features

                parts.append((self.maps["contact"], list(contact_features(contacts))))
        js: list[int] = []
        cnt: list[int] = []
        bounds: list[int] = []
        for vocab, tokens in parts:
            hits = [j for j in map(vocab.get, tokens) if j is not None]
            if not hits:
                continue
            c = Counter(hits)
            bounds.append(len(js))
            js.extend(c.keys())
            cnt.extend(c.values())
        if not js:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
        cols = np.array(js, dtype=np.intp)
        v = (np.log(np.array(cnt, dtype=np.float64)) + 1.0) * self.idf[cols]
        if len(bounds) == 1:
            return cols, v / math.sqrt(float(v @ v))
        norms = np.sqrt(np.add.reduceat(v * v, bounds))
        lengths = np.diff(np.append(bounds, len(js)))
        return cols, v / np.repeat(norms, lengths)

    def proba(
        self, text: str, contacts: Sequence[Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities in `classes` order, columns, values)."""
        cols, vals = self.features(text, contacts)
        z = self.intercept + vals @ self.coef[cols] if len(cols) else self.intercept.copy()
        if len(self.classes) == 2:  # binary LogisticRegression: one column, sigmoid
            p1 = 1.0 / (1.0 + math.exp(-float(z[0])))
            return np.array([1.0 - p1, p1]), cols, vals
        z = z - z.max()
        e = np.exp(z)
        return e / e.sum(), cols, vals

    def top_features(self, cols: np.ndarray, vals: np.ndarray, label: str, k: int = 5) -> list[dict]:
        """The k features that pushed hardest toward `label` (value x weight)."""
        if not len(cols):
            return []
        ci = self.classes.index(label)
        if self.coef.shape[1] == 1:  # binary: the single column pushes toward classes[1]
            contrib = vals * self.coef[cols, 0] * (1.0 if ci == 1 else -1.0)
        else:
            contrib = vals * self.coef[cols, ci]
        order = np.argsort(-contrib, kind="stable")[:k]
        names = self.names
        return [
            {"feature": names[int(cols[i])], "weight": round(float(contrib[i]), 4)}
            for i in order.tolist()
            if contrib[i] > 0
        ]


def fast_arrays(pipeline: Any) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The fitted pipeline's numbers, laid out for FastScorer."""
    union = dict(pipeline.named_steps["features"].transformer_list)
    clf = pipeline.named_steps["clf"]
    idfs, vocabs, offset = [], {}, 0
    for part in ("word", "char", "contact"):
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
        # Where some term starts (a zero-width lookahead finds overlapping starts in C); the
        # Python loop in _match_terms then runs only at those positions.
        alts = sorted({nt for lst in self._terms.values() for nt, _t, _c in lst}, key=lambda t: (-len(t), t))
        self._term_re = re.compile("(?=(?:" + "|".join(map(re.escape, alts)) + "))") if alts else None

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
        for m in self._term_re.finditer(text):
            i = m.start()
            if i < nxt:
                continue
            step = 1
            for nt, _term, cat in self._terms.get(text[i], ()):
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
        probs, _, _ = self.scorer.proba(clean_text(self._normalize_text(_clean(text))))
        return dict(zip(self.scorer.classes, map(float, probs), strict=True))

    def classify(self, text: str, thresholds: Mapping[str, float] | None = None) -> Verdict:
        """The verdict on one message; `thresholds` overrides delete thresholds per category."""
        text = _clean(text)
        ntext = clean_text(self._normalize_text(text))
        contacts = _extract_contacts(ntext)
        probs, cols, vals = self.scorer.proba(ntext, [] if contacts is None else contacts)
        scores = dict(zip(self.scorer.classes, map(float, probs), strict=True))
        label, action = decide(scores, self.categories, self.thresholds.with_overrides(thresholds))
        terms = self._find_terms(ntext)
        term_reasons: list[dict] = []
        contact_reasons: list[dict] = []
        if terms or contacts:
            # Positions in the original text need the offset map: built only when there is
            # something to point at (most messages have neither).
            norm = self._normalize(text)
            if norm.text != ntext:  # cannot happen (normalize_text == normalize().text); be safe
                ntext = norm.text
                terms = self._find_terms(ntext)
                contacts = _extract_contacts(ntext)
            for nt, cat, i, end in terms:
                os_, oe = norm.to_original(i, end)
                term_reasons.append({"term": nt, "category": cat, "start": int(os_), "end": int(oe)})
            for c in contacts or ():
                os_, oe = norm.to_original(c.start, c.end)
                contact_reasons.append({"kind": c.kind, "value": c.value, "start": int(os_), "end": int(oe)})
        reasons = {
            "terms": term_reasons,
            "features": self.scorer.top_features(cols, vals, label),
            "contacts": contact_reasons,
        }
        return Verdict(
            label=label,
            score=scores[label],
            action=action,
            scores=scores,
            reasons=reasons,
            model_version=self.version,
        )

    def classify_many(
        self, texts: Iterable[str], thresholds: Mapping[str, float] | None = None
    ) -> list[Verdict]:
        """`classify` for each text, in order."""
        return [self.classify(t, thresholds) for t in texts]


# A contact needs an ASCII (or full-width) letter or digit: phone, QQ and WeChat ids, handles,
# links. IGNORECASE as in classifier.contacts, so the Kelvin sign and long s count as letters.
_MAYBE_CONTACT = re.compile(r"[0-9a-z\uff10-\uff19\uff41-\uff5a]", re.IGNORECASE)


def _extract_contacts(text: str) -> list[Any] | None:
    """extract_contacts(text), skipped for text without a letter or digit; None on failure."""
    if _MAYBE_CONTACT.search(text) is None:
        return []
    try:
        from classifier.contacts import extract_contacts

        return list(extract_contacts(text))
    except Exception:
        return None


def _clean(text: Any) -> str:
    return clean_text(text)  # lone surrogates cannot leave Python (rjieba is Rust)


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


def train(
    seeds: Seeds,
    gen: GeneratorConfig | None = None,
    params: ModelParams | None = None,
    *,
    extra: Sequence[Example] = (),
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Generate the corpus, fit on the train split, choose thresholds on the held-out split."""
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
    train_set, held = split_heldout(corpus, params.heldout_share, gen.seed)
    say(f"fitting on {len(train_set)} examples ({len(held)} held out)")
    pipe = build_pipeline(terms, words, params)
    pipe.fit([e.text for e in train_set], [e.label for e in train_set])
    for _, vec in pipe.named_steps["features"].transformer_list:
        if hasattr(vec, "stop_words_"):
            del vec.stop_words_  # terms cut by max_features/min_df: large and unused
    classes = tuple(str(c) for c in pipe.named_steps["clf"].classes_)
    from classifier import CATEGORIES

    order = {c: i for i, c in enumerate(CATEGORIES)}
    categories = tuple(
        sorted((c for c in seeds.categories if c in classes), key=lambda c: (order.get(c, 99), c))
    )
    say("choosing thresholds on the held-out split")
    probs = pipe.predict_proba([e.text for e in held])
    thresholds = choose_thresholds(probs, [e.label for e in held], classes, categories, params)
    metrics = heldout_metrics(probs, held, classes, categories, thresholds)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    metrics["n_train"] = len(train_set)
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
        np.savez_compressed(f, **arrays)
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
    for k in ("word_ngrams", "char_ngrams"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return replace(ModelParams(), **kw)


def load(path: str | Path | None = None) -> Classifier:
    """Load a model directory (default: the model shipped in classifier/default_model/)."""
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


def from_result(result: TrainResult) -> Classifier:
    """A Classifier straight from a training result (no files)."""
    arrays, vocabs = fast_arrays(result.pipeline)
    scorer = FastScorer(
        result.classes,
        arrays["coef"],
        arrays["intercept"],
        arrays["idf"],
        vocabs,
        result.words,
        result.params,
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
