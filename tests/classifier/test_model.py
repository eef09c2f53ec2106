"""The model: fast path equals scikit-learn, determinism, persistence, provenance, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
from classifier import model as m
from classifier.features import SoundTokenizer, WordTokenizer, make_normalizer, ngrams
from classifier.generate import GeneratorConfig, generate, training_corpus_hash
from classifier.seeds import load_seeds


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_ql_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


_tg = _sibling("test_generate")
TINY_COMMON, TINY_FRAUD, TINY_OK, write_seeds = _tg.TINY_COMMON, _tg.TINY_FRAUD, _tg.TINY_OK, _tg.write_seeds


TINY_DRUG = """
label = "drug"
lexicon = ["冰毒", "出冰"]
[slots]
drug = ["冰毒", "麻古", "K粉"]
[[template]]
shape = "sale"
lines = ["出{drug}，{city}可送，{contact}", "长期{drug}现货，{money}一克，{contact}"]
"""
SMALL = GeneratorConfig(seed=0, per_category=500, ok_templated=600, background=600)
PARAMS = m.ModelParams(word_max_features=5000, char_max_features=8000, max_iter=200)
ODD_INPUTS = [
    "",
    "   ",
    "\n\t",
    "😀🎉🔥",
    "\ud800",
    "a\udfffb",
    "\x00\x01\x1b[31m",
    "冰" * 100_000,
    "x" * 100_000,
]


@pytest.fixture(scope="module")
def tiny_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    return write_seeds(root, common=TINY_COMMON, fraud=TINY_FRAUD, ok=TINY_OK, drug=TINY_DRUG)


@pytest.fixture(scope="module")
def small(tiny_seeds: Path) -> m.TrainResult:
    return m.train(load_seeds(tiny_seeds), SMALL, PARAMS)


@pytest.fixture(scope="module")
def shipped() -> m.Classifier:
    return classifier.load()


def test_fast_path_equals_pipeline_small(small: m.TrainResult, tiny_seeds: Path) -> None:
    clf = m.from_result(small)
    texts = [e.text for e in generate(load_seeds(tiny_seeds), SMALL)][:800] + ODD_INPUTS[:7]
    ref = small.pipeline.predict_proba(texts)
    fast = np.array([[clf.scores(t)[c] for c in small.classes] for t in texts])
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-9)


def test_fast_path_equals_pipeline_on_project_corpus(shipped: m.Classifier) -> None:
    cfg = GeneratorConfig(seed=11, per_category=250, ok_templated=500, background=500)
    texts = [e.text for e in generate(load_seeds(), cfg)]
    ref = shipped.pipeline.predict_proba(texts)
    fast = np.array([[shipped.scores(t)[c] for c in shipped.scorer.classes] for t in texts])
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-9)


def _route_log_prob(tokenizer: object, tokens: list[str]) -> float:
    """jieba's score of a segmentation (no HMM): the sum of log(freq / total) over its words."""
    freq, total = tokenizer.FREQ, tokenizer.total  # type: ignore[attr-defined]
    return sum(math.log(freq.get(w) or 1) - math.log(total) for w in tokens)


def test_rjieba_agrees_with_jieba_on_project_corpus(shipped: m.Classifier) -> None:
    """The same words, or where they differ an equally probable route: "冲冲冲" is 冲冲+冲 or 冲+冲冲
    by the same sum, added in another order, and the two libraries' floating point breaks the tie apart."""
    import jieba

    words = json.loads((shipped.directory / m.VOCAB_FILE).read_text(encoding="utf-8"))["words"]
    fast, ref = WordTokenizer(words, "rjieba"), WordTokenizer(words, "jieba")
    scorer = jieba.Tokenizer()
    scorer.initialize()
    for w in words:
        scorer.add_word(w)
    norm = make_normalizer([t for t, _ in load_seeds().lexicon_terms()])
    cfg = GeneratorConfig(seed=5, per_category=300, ok_templated=600, background=600)
    texts = [norm.normalize(e.text).text for e in generate(load_seeds(), cfg)]
    differ = []
    for t in texts:
        a, b = fast(t), ref(t)
        if a == b:
            continue
        tied = "".join(a) == "".join(b) and math.isclose(
            _route_log_prob(scorer, a), _route_log_prob(scorer, b), rel_tol=1e-12
        )
        if not tied:
            differ.append((t, a, b))
    assert not differ, differ[:5]


def test_route_tie_check_tells_a_real_difference() -> None:
    """The tie allowance above cannot hide a different segmentation: 专升本 whole and 专/升/本 score apart."""
    import jieba

    scorer = jieba.Tokenizer()
    scorer.initialize()
    scorer.add_word("专升本")
    assert math.isclose(_route_log_prob(scorer, ["冲冲", "冲"]), _route_log_prob(scorer, ["冲", "冲冲"]))
    assert not math.isclose(
        _route_log_prob(scorer, ["专升本"]), _route_log_prob(scorer, ["专", "升", "本"]), rel_tol=1e-12
    )


def test_training_is_deterministic(small: m.TrainResult, tiny_seeds: Path) -> None:
    again = m.train(load_seeds(tiny_seeds), SMALL, PARAMS)
    assert again.version == small.version
    assert again.data_hash == small.data_hash
    assert again.thresholds == small.thresholds
    other = m.train(load_seeds(tiny_seeds), GeneratorConfig(**{**SMALL.to_dict(), "seed": 1}), PARAMS)
    assert other.version != small.version


def test_vectorizers_fitted_side_by_side_give_the_same_model(small: m.TrainResult) -> None:
    # train() fits the word and character vectorizers in parallel: the same matrices as one after
    # the other, and the saved pipeline does not carry the setting.
    from sklearn.base import clone

    union = small.pipeline.named_steps["features"]
    assert union.n_jobs is None
    texts = [
        e.text
        for e in generate(load_seeds(), GeneratorConfig(per_category=40, ok_templated=80, background=40))
    ]
    normalized = small.pipeline.named_steps["normalize"].transform(texts)
    sequential = clone(union).fit_transform(normalized)
    parallel = clone(union).set_params(n_jobs=2).fit_transform(normalized)
    assert sequential.shape == parallel.shape and (sequential != parallel).nnz == 0


def test_persistence_round_trip(small: m.TrainResult, tmp_path: Path) -> None:
    d = m.save(small, tmp_path / "model")
    loaded = classifier.load(d)
    direct = m.from_result(small)
    assert loaded.version == small.version
    assert loaded.categories == small.categories
    for text in ["出冰毒，北京可送，加Vabc123", "今晚吃火锅吗", "急招刷单，日结300元"]:
        a, b = loaded.classify(text), direct.classify(text)
        assert a.to_dict() == b.to_dict()
    side = json.loads((d / m.SIDECAR).read_text(encoding="utf-8"))
    for key in (
        "version",
        "created",
        "training_data_sha256",
        "libraries",
        "thresholds",
        "metrics",
        "artifacts",
    ):
        assert key in side
    assert side["libraries"]["scikit-learn"]
    ref = loaded.pipeline.predict_proba(["出冰毒，北京可送"])[0]
    np.testing.assert_allclose(list(loaded.scores("出冰毒，北京可送").values()), ref, atol=1e-9)


@pytest.mark.parametrize("victim", [m.FAST_FILE, m.VOCAB_FILE, m.PIPELINE_FILE])
def test_tampered_artifacts_are_refused(small: m.TrainResult, tmp_path: Path, victim: str) -> None:
    d = m.save(small, tmp_path / "model")
    path = d / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(m.ModelError, match="digest"):
        if victim == m.PIPELINE_FILE:
            m.load_pipeline(d)
        else:
            classifier.load(d)


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(m.ModelError, match="not a qinglang model"):
        classifier.load(tmp_path)


def test_shipped_model_is_current(shipped: m.Classifier) -> None:
    """A shipped model trained from other seeds or other feature code fails here: retrain it
    with `qinglang train --install`."""
    side = shipped.sidecar
    gen = GeneratorConfig(**side["generator"])
    assert training_corpus_hash(load_seeds(), gen) == side["training_data_sha256"]
    assert m.feature_code_digest() == side["feature_code_sha256"]
    assert shipped.categories == ("drug", "fraud", "obscene", "gambling")


def test_shipped_model_size() -> None:
    total = sum(p.stat().st_size for p in m.DEFAULT_MODEL_DIR.iterdir())
    assert total < 25 * 1024 * 1024


def _check(v: classifier.Verdict, text: str) -> None:
    assert v.label in classifier.LABELS
    assert v.action in ("delete", "review", "pass")
    assert (v.label == "ok") == (v.action == "pass")
    assert 0.0 <= v.score <= 1.0
    assert abs(sum(v.scores.values()) - 1.0) < 1e-6
    json.dumps(v.to_dict(), ensure_ascii=False)
    for t in v.reasons["terms"]:
        assert 0 <= t["start"] <= t["end"] <= len(text)


@pytest.mark.parametrize("text", ODD_INPUTS, ids=lambda t: repr(t[:12]))
def test_odd_inputs_get_a_verdict(shipped: m.Classifier, text: str) -> None:
    _check(shipped.classify(text), text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_text_gets_a_verdict(shipped: m.Classifier, text: str) -> None:
    _check(shipped.classify(text), text)


def test_reasons_point_into_the_original_text(shipped: m.Classifier) -> None:
    text = "【福利】刷 单 日结300，加薇：abc12345"
    v = shipped.classify(text)
    spans = {text[t["start"] : t["end"]] for t in v.reasons["terms"]}
    assert any("刷" in s and "单" in s for s in spans), v.reasons
    assert v.reasons["features"] and all("feature" in f and "weight" in f for f in v.reasons["features"])


def test_per_chat_thresholds(shipped: m.Classifier) -> None:
    text = "兼职刷单日结，一单一结，加V了解"
    base = shipped.classify(text)
    assert base.label == "fraud"
    strict = shipped.classify(text, thresholds={"fraud": 1.0})
    assert strict.action != "delete"
    loose = shipped.classify(text, thresholds={"fraud": 0.0})
    assert loose.action == "delete"
    assert shipped.classify_many([text, text]) == [base, base]


def test_reasons_for_flagged_only(shipped: m.Classifier) -> None:
    """classify(reasons="flagged") gives the same label, score, scores and action for every text, and
    the same reasons for delete and review verdicts; a pass verdict comes without reasons."""
    cfg = GeneratorConfig(seed=5, per_category=150, ok_templated=300, background=300)
    texts = [e.text for e in generate(load_seeds(), cfg)] + ODD_INPUTS[:7] + ["加V了解一下 mm52099"]
    lenient = {category: 0.05 for category in shipped.categories}
    actions: Counter[str] = Counter()
    for text in texts:
        for thresholds in (None, lenient):
            full = shipped.classify(text, thresholds)
            lean = shipped.classify(text, thresholds, reasons="flagged")
            actions[full.action] += 1
            key = (full.label, full.score, full.scores, full.action, full.model_version)
            assert (lean.label, lean.score, lean.scores, lean.action, lean.model_version) == key, text
            if full.action == "pass":
                assert lean.reasons == {}, text
            else:
                assert lean == full, text
    assert actions["pass"] and actions["delete"] and actions["review"], actions


def test_shipped_model_dir_copy_loads(tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(m.DEFAULT_MODEL_DIR, d)
    assert classifier.load(d).version == classifier.load().version


def test_lazy_offsets_and_contact_shortcut_match_the_full_path(shipped: m.Classifier) -> None:
    """classify() builds the offset map only when there are terms or contacts to point at, and
    skips contact extraction for text without a letter or digit: same reasons as doing it all."""
    from classifier.contacts import extract_contacts

    cfg = GeneratorConfig(seed=3, per_category=150, ok_templated=300, background=300)
    texts = (
        [e.text for e in generate(load_seeds(), cfg)]
        + ODD_INPUTS[:7]
        + [
            "Ｋ１３８",
            "\u212a\u017f",
            "我的QQ：12345678",
            "电话13812345678",
            "看 t.me/abcde",
            "2点见",
            "12号楼",
        ]
    )
    for text in texts:
        v = shipped.classify(text)
        norm = shipped._normalize(m._clean(text))
        _, contacts = shipped._contacts(norm)
        assert v.reasons["terms"] == shipped._match_terms(norm), text
        assert v.reasons["contacts"] == contacts, text
        assert m._extract_contacts(norm.text) == list(extract_contacts(norm.text)), text


def first_fold(examples: list, seed: int) -> tuple[list, list]:
    """(the lines the first of five fold fits trains on, the lines it scores)."""
    folds = m.shape_folds(examples, 5, seed)
    return (
        [e for e, f in zip(examples, folds, strict=True) if f != 0],
        [e for e, f in zip(examples, folds, strict=True) if f == 0],
    )


def test_leave_shapes_out_split() -> None:
    """Thresholds are chosen on whole shapes the first fit never saw; feedback is never held out;
    the split is deterministic."""
    from classifier.generate import Example

    ex = [Example(f"f{s}{i}", "fraud", f"shape{s}") for s in range(10) for i in range(20)]
    ex += [Example(f"o{s}{i}", "ok", f"ok{s}") for s in range(5) for i in range(20)]
    ex += [Example(f"b{i}", "ok", "background_news") for i in range(200)]
    ex += [Example(f"fb{i}", "fraud", "feedback") for i in range(30)]
    ex += [Example(f"d{i}", "drug", "only") for i in range(50)]  # one shape: held out line by line
    train, held = first_fold(ex, seed=0)
    assert (train, held) == first_fold(ex, seed=0)
    shapes = lambda xs, label: {e.shape for e in xs if e.label == label and e.shape != "background_news"}  # noqa: E731
    assert len(shapes(held, "fraud")) == 2 and not shapes(held, "fraud") & shapes(train, "fraud")
    assert len(shapes(held, "ok")) == 1 and not shapes(held, "ok") & shapes(train, "ok")
    assert not any(e.shape == "feedback" for e in held)
    assert 0 < sum(e.shape == "background_news" for e in held) < 100
    assert 0 < sum(e.label == "drug" for e in held) < 50
    w = m.shape_weights(ex)
    by_shape: dict[tuple[str, str], float] = {}
    for e, x in zip(ex, w, strict=True):
        by_shape[(e.label, e.shape)] = by_shape.get((e.label, e.shape), 0.0) + x
    assert by_shape[("ok", "background_news")] == 200 and by_shape[("fraud", "feedback")] == 30
    assert len({round(v, 9) for (lab, s), v in by_shape.items() if lab == "fraud" and s != "feedback"}) == 1


def test_shape_folds_score_every_shape_once() -> None:
    """Every line but feedback lands in exactly one fold, each shape whole in one fold, hard
    negatives dealt evenly; deterministic for a seed."""
    from classifier.generate import Example

    ex = [Example(f"f{s}{i}", "fraud", f"shape{s}") for s in range(10) for i in range(6)]
    ex += [Example(f"h{s}{i}", "ok", f"hard_negative_{s}") for s in range(5) for i in range(6)]
    ex += [Example(f"o{s}{i}", "ok", f"chat{s}") for s in range(5) for i in range(6)]
    ex += [Example(f"b{i}", "ok", "background_news") for i in range(100)]
    ex += [Example(f"fb{i}", "fraud", "feedback") for i in range(7)]
    folds = m.shape_folds(ex, 5, seed=3)
    assert folds == m.shape_folds(ex, 5, seed=3)
    assert [f for e, f in zip(ex, folds, strict=True) if e.shape == "feedback"] == [-1] * 7
    assert all(0 <= f < 5 for e, f in zip(ex, folds, strict=True) if e.shape != "feedback")
    by_shape: dict[str, set[int]] = {}
    for e, f in zip(ex, folds, strict=True):
        if e.shape not in ("background_news", "feedback"):
            by_shape.setdefault(e.shape, set()).add(f)
    assert all(len(fs) == 1 for fs in by_shape.values())
    for f in range(5):
        in_fold = {s for s, fs in by_shape.items() if f in fs}
        assert sum(s.startswith("hard_negative") for s in in_fold) == 1
        assert sum(s.startswith("shape") for s in in_fold) == 2
    assert len({f for e, f in zip(ex, folds, strict=True) if e.shape == "background_news"}) == 5


def test_split_holds_out_hard_negatives_in_proportion() -> None:
    """Whichever seed: the held-out ok shapes are a fixed share of hard negatives and of the rest."""
    from classifier.generate import Example

    ex = [Example(f"h{s}{i}", "ok", f"hard_negative_{s}") for s in range(10) for i in range(5)]
    ex += [Example(f"o{s}{i}", "ok", f"chat{s}") for s in range(10) for i in range(5)]
    ex += [Example(f"f{s}{i}", "fraud", f"shape{s}") for s in range(5) for i in range(5)]
    for seed in range(6):
        _, held = first_fold(ex, seed=seed)
        shapes = {e.shape for e in held if e.label == "ok"}
        assert sum(s.startswith("hard_negative") for s in shapes) == 2, seed
        assert len(shapes) == 4, seed


def test_one_inseparable_shape_does_not_set_the_threshold() -> None:
    """A held-out benign shape flagged at every threshold counts at most `shape_rate_cap`."""
    classes, cats = ("fraud", "ok"), ("fraud",)
    rows, labels, shapes = [], [], []
    for s in range(10):  # ten benign shapes: nine clean, one flagged at 0.95 throughout
        for _ in range(20):
            p = 0.95 if s == 0 else 0.2
            rows.append([p, 1 - p])
            labels.append("ok")
            shapes.append(f"ok{s}")
    probs = np.array(rows)
    capped = m.choose_thresholds(probs, labels, classes, cats, m.ModelParams(), [False] * len(rows), shapes)
    uncapped = m.choose_thresholds(
        probs, labels, classes, cats, m.ModelParams(shape_rate_cap=1.0), [False] * len(rows), shapes
    )
    assert uncapped.review["fraud"] > 0.95
    assert capped.review["fraud"] == m.ModelParams().review_floor


def _plain_benign_rates(
    p_bad: np.ndarray, background: np.ndarray, shapes: np.ndarray, t: float, cap: float
) -> tuple[float, float]:
    """BenignRates.at the plain way: a mask per shape name, per threshold."""
    flagged = p_bad >= t
    bg = float(flagged[background].mean()) if background.any() else 0.0
    names = sorted(set(shapes[~background].tolist()))
    per = [min(cap, float(flagged[~background & (shapes == n)].mean())) for n in names]
    return bg, (sum(per) / len(per) if per else 0.0)


@pytest.mark.parametrize("with_background", [True, False])
def test_benign_rates_equal_the_plain_count(with_background: bool) -> None:
    """The grouped count gives the same floats as a mask per shape, at every threshold and cap."""
    rng = np.random.default_rng(7)
    n = 3000
    p_bad = np.round(rng.random(n), 3)  # ties with the grid's thresholds
    background = rng.random(n) < (0.4 if with_background else 0.0)
    shapes = np.array([f"s{k}" for k in rng.integers(0, 37, n)], dtype=object)
    for cap in (0.1, 1.0):
        rates = m.BenignRates(p_bad, background, shapes, cap)
        for t in np.round(np.arange(0.0, 1.001, 0.01), 2):
            assert rates.at(float(t)) == _plain_benign_rates(p_bad, background, shapes, float(t), cap)


def _reference_features(scorer: m.FastScorer, text: str) -> tuple[list[int], list[float]]:
    """The fast path's features done the plain way (string n-grams, dict lookups, Python floats):
    what FastScorer computed before its numpy shortcuts; unique columns in order of first
    appearance per vectorizer."""
    import math

    from classifier.features import ContactTokenizer, ngrams

    chars = "".join(text.split())
    lo, hi = scorer._char_range
    grams = [chars[i : i + k] for k in range(lo, hi + 1) for i in range(len(chars) - k + 1)]
    parts = [
        (scorer.maps["word"], ngrams(scorer._words(text), *scorer._word_range)),
        (scorer.maps["char"], grams),
        (scorer.maps["contact"], ContactTokenizer()(text)),
    ]
    if scorer._sound_range is not None:
        parts.append((scorer.maps["sound"], ngrams(SoundTokenizer()(chars), *scorer._sound_range)))
    cols: list[int] = []
    vals: list[float] = []
    for vocab, tokens in parts:
        cnt = Counter(vocab[t] for t in tokens if t in vocab)
        v = [(math.log(c) + 1.0) * float(scorer.idf[j]) for j, c in cnt.items()]
        norm = math.sqrt(sum(x * x for x in v))
        cols.extend(cnt)
        vals.extend(x / norm for x in v)
    return cols, vals


def test_classify_equals_reference_on_project_corpus(shipped: m.Classifier) -> None:
    """classify() (lazy offsets, contacts passed in, integer-keyed character n-grams, one-row
    gathers) gives the pipeline's probabilities and the top features a plain implementation
    gives, ties in first-appearance order."""
    cfg = GeneratorConfig(seed=13, per_category=250, ok_templated=500, background=500)
    texts = (
        [e.text for e in generate(load_seeds(), cfg)]
        + ODD_INPUTS[:7]
        + ["𝕏𝕏 加微信 🍀 abc1234", "\U0010ffff冰毒"]
    )
    verdicts = [shipped.classify(t) for t in texts]
    ref = shipped.pipeline.predict_proba(texts)
    got = np.array([[v.scores[c] for c in shipped.scorer.classes] for v in verdicts])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    sc = shipped.scorer
    for text, v in zip(texts, verdicts, strict=True):
        cols, vals = _reference_features(sc, shipped.normalizer.normalize_text(m._clean(text)))
        ci = sc.classes.index(v.label)
        contrib = np.array(vals) * sc.coef[cols, ci] if cols else np.zeros(0)
        order = np.argsort(-contrib, kind="stable")[:5]
        expected = [
            {"feature": sc.name(cols[i]), "weight": round(float(contrib[i]), 4)}
            for i in order
            if contrib[i] > 0
        ]
        assert v.reasons["features"] == expected, text


def test_counted_columns_and_values_equal_reference(shipped: m.Classifier) -> None:
    """One dict counts every vectorizer's n-grams (unknown ones counted as None and dropped):
    same columns in the same order, same values, as the plain way; with and without contacts
    passed in."""
    from classifier.contacts import extract_contacts

    sc = shipped.scorer
    cfg = GeneratorConfig(seed=19, per_category=100, ok_templated=200, background=200)
    texts = [shipped.normalizer.normalize_text(e.text) for e in generate(load_seeds(), cfg)]
    texts += ["", " ", "a", "冰冰冰 冰冰", "加微信 abc12345 qq 12345678 t.me/abcde", "\U0010ffff冰毒"]
    # counts of 256 and more, and past the sublinear-tf table (the fallbacks)
    texts += ["冰" * 300, "冰毒 " * 5000]
    for text in texts:
        ref_cols, ref_vals = _reference_features(sc, text)
        for contacts in (None, extract_contacts(text)):
            cols, vals = sc.features(text, contacts)
            assert cols.tolist() == ref_cols, text
            np.testing.assert_allclose(vals, ref_vals, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"drug": 0.5, "fraud": 0.3, "ok": 0.2}, ("drug", "delete")),  # 0.8 of solicitation
        ({"drug": 0.35, "fraud": 0.35, "ok": 0.3}, ("fraud", "review")),  # tie: the greater name
        ({"fraud": 0.2, "ok": 0.8}, ("ok", "pass")),  # a category missing from scores counts 0
    ],
)
def test_decide(scores: dict[str, float], expected: tuple[str, str]) -> None:
    th = m.Thresholds(delete={"drug": 0.75, "fraud": 0.75}, review={"drug": 0.6, "fraud": 0.6})
    assert m.decide(scores, ("drug", "fraud"), th) == expected


def test_integer_char_keys_match_string_ngrams(shipped: m.Classifier) -> None:
    """The searchsorted lookup of character n-grams finds what slicing and the dict find."""
    sc = shipped.scorer
    assert sc._char_table is not None
    get = sc.maps["char"].get
    cfg = GeneratorConfig(seed=17, per_category=100, ok_templated=200, background=200)
    texts = [shipped.normalizer.normalize_text(e.text) for e in generate(load_seeds(), cfg)]
    texts += ["", " ", "a", "ab", "\U0010ffff\U0010ffff\U0010ffff", "\x00\x00", "冰 毒 冰毒", "𝕏加微信"]
    # what the UTF-16 windows cannot key (the dict then): U+0000, the U+FFFF padding, two units
    texts += [
        "加\x00微信",
        "\uffff",
        "a\uffff\uffffb",
        "加微\uffff信",
        "\ud83d\ude00加",
        "加微信😀",
        "\ufffe\ufffd",
    ]
    for text in texts:
        assert sc._char_hits(text) == [j for j in map(get, sc._char_grams(text)) if j is not None], text


def test_sound_keys_match_sound_ngrams_by_name(shipped: m.Classifier) -> None:
    """The key search over stand-in characters finds the sound n-grams that cutting the text into
    syllables and looking the joined n-grams up by name finds, in the same order."""
    sc = shipped.scorer
    assert sc._sound_keys is not None and sc._sound_range is not None
    cfg = GeneratorConfig(seed=19, per_category=100, ok_templated=200, background=200)
    texts = [shipped.normalizer.normalize_text(e.text) for e in generate(load_seeds(), cfg)]
    texts += [
        "",
        "a",
        "啊a",
        "兼职日洁",
        "煎职曰结 5 元",
        "𝕏兼职",
        "兼\x00职",
        "兼\uffff职",
        "a\ue000兼职",
        "\ue3ff\ue000",
    ]
    found = 0
    for text in texts:
        s = "".join(text.split())
        expected = [
            j
            for j in map(sc.maps["sound"].get, ngrams(SoundTokenizer()(s), *sc._sound_range))
            if j is not None
        ]
        assert sc._sound_cols_of(s) == expected, text
        found += len(expected)
    assert found > 1000  # the sound vocabulary is in use on ordinary text


def test_char_keys_together_are_the_keys_one_by_one(shipped: m.Classifier) -> None:
    """The vectorized keys equal _char_key gram by gram (-1 for None): on the shipped vocabulary,
    with grams the UTF-16 keys cannot hold, and on the per-gram path (an empty or a long gram)."""
    grams = list(shipped.scorer.maps["char"])
    odd = ["a\x00", "\uffff", "𝕏", "x\uffffy", "加\ud800", "\ud83d\ude00", "\x00"]
    for batch in (
        grams,
        grams[:500] + odd,
        ["冰", "冰毒", "出冰毒", "a", "ab"],
        [],
        ["", "a"],
        ["abcd", *odd],
        ["abcd", "a"],
    ):
        expected = [-1 if (k := m._char_key(g)) is None else k for g in batch]
        assert m._char_keys_of(batch).tolist() == expected


def _round4_cases() -> list[float]:
    """Decimal ties of the fourth place (k + 1/2) / 10**4 and the doubles either side of them."""
    import math

    out = [0.0, -0.0, 1e-9, 5e-324, -0.00005, 0.00005, 1.00005, 2.5e-5, 1e12, 1e300, math.inf, math.nan]
    for k in range(0, 400_000, 7):
        t = (2 * k + 1) / 20_000
        out += [t, math.nextafter(t, 0.0), math.nextafter(t, math.inf)]
    return out


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, min_value=-1e6, max_value=1e6) | st.sampled_from(_round4_cases()))
def test_round4_is_round(x: float) -> None:
    """The top features' weights skip round()'s decimal round trip only where it is provably the
    same double: bit for bit equal to round(x, 4), ties of the fourth decimal included."""
    import struct

    assert struct.pack("<d", m._round4(x)) == struct.pack("<d", round(x, 4))


def test_round4_on_every_tie_neighbour() -> None:
    import struct

    for x in _round4_cases():
        assert struct.pack("<d", m._round4(x)) == struct.pack("<d", round(x, 4)), x


def test_maybe_contact_gate_is_the_ignorecase_pattern() -> None:
    """The gate before extract_contacts, spelled out without IGNORECASE, finds three digits, a
    letter and four id characters, a domain's dot or "://" wherever the IGNORECASE pattern does:
    every code point alone and in each place of each alternative."""
    import re

    letter = "a-z\uff41-\uff5a"
    ref = re.compile(
        f"[0-9\uff10-\uff19]{{3}}|[{letter}][-_{letter}0-9]{{4}}|[{letter}0-9]\\.[{letter}]{{2}}|://",
        re.IGNORECASE,
    )
    gate = m._MAYBE_CONTACT
    contexts = ("{}", "1{}2", "12{}", "{}１2", "{}bcd_", "a{}c-e", "x{}.cn", "a.{}b", "{}//", ":{}/")
    for c in range(0x110000):
        ch = chr(c)
        for s in (ctx.format(ch) for ctx in contexts):
            assert (gate.search(s) is None) == (ref.search(s) is None), (hex(c), s)


def _reference_terms(clf: m.Classifier, text: str) -> list[tuple[str, str, int, int]]:
    """Seed terms found the plain way: at each position every term that starts there (longest
    first), then on past the longest; ASCII terms only as whole words."""
    entries = sorted(
        (e for lst in clf._terms.values() for e in lst), key=lambda e: (e[0][0], -len(e[0]), e[0], e[2])
    )
    found = []
    i = 0
    while i < len(text):
        step = 1
        for nt, _term, cat in entries:
            end = i + len(nt)
            if text[i:end] != nt:
                continue
            around = (text[i - 1 : i], text[end : end + 1])
            if nt.isascii() and any(c.isascii() and c.isalnum() for c in around):
                continue
            found.append((nt, cat, i, end))
            step = max(step, len(nt))
        i += step
    return found


def test_find_terms_matches_the_plain_search(shipped: m.Classifier) -> None:
    """The two-class prefilter and the two-character index find what trying every term at every
    position finds; with a one-character term, the first-character path does too."""
    cfg = GeneratorConfig(seed=23, per_category=60, ok_templated=120, background=120)
    texts = [shipped.normalizer.normalize_text(e.text) for e in generate(load_seeds(), cfg)]
    texts += ["", "冰", "冰毒冰毒", "sd", "asd", "sd1", "出冰出冰毒", "k粉k粉", "大麻大麻叶"]
    one_char = m.Classifier(
        shipped.scorer,
        lexicon=[("冰", "drug"), ("冰毒", "drug"), ("sd", "obscene"), ("大麻", "drug"), ("k", "drug")],
        categories=shipped.categories,
        thresholds=shipped.thresholds,
        version="test",
        sidecar={},
    )
    assert shipped._prefix == 2 and one_char._prefix == 1
    for clf in (shipped, one_char):
        for text in texts:
            assert clf._find_terms(text) == _reference_terms(clf, text), text


class _Str(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        "",
        "加微信",
        "a\ud800b",
        "\udfff",
        "\ud83d\ude00",
        "😀",
        _Str("x\ud800"),
        _Str("ok"),
        None,
        12345,
        b"\xff",
    ],
)
def test_clean_is_clean_text(value: object) -> None:
    """The classifier's quick surrogate check cleans exactly as clean_text does."""
    from classifier.features import clean_text

    assert m._clean(value) == clean_text(value)
    assert type(m._clean(value)) is type(clean_text(value))
