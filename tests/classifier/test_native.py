"""The compiled scorer (classifier._native): equal to scikit-learn and to the pure-Python scorer,
identical verdicts, bad input and misuse without a crash, no leaked references or memory."""

from __future__ import annotations

import gc
import os
import random
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import classifier
from classifier import model as m
from classifier.bench import rss_mb
from classifier.generate import GeneratorConfig, generate
from classifier.seeds import load_seeds

# scripts/test sets it: there the suite fails when the extension did not build, so CI always runs
# the compiled path (pip treats the extension as optional).
REQUIRE = os.environ.get("QINGLANG_REQUIRE_NATIVE") == "1"

BAD_INPUTS = [
    "",
    " ",
    "\n\t\u3000",
    "\x00",
    "a\x00b加\x00微信",
    "\uffff",
    "加微\uffff信\uffff\uffff",
    "\ufffe\ufffd",
    "\ud800",
    "a\udfffb冰毒",
    "\ud83d\ude00加",  # a surrogate pair spelt as two lone surrogates
    "\x00\x01\x1b[31m\x7f\x85\u2028\u200b",
    "😀🎉🔥 加微信 🍀 abc1234",
    "𝕏𝕏加微信𝕏",
    "\U0010ffff冰毒\U0010ffff",
    "冰 毒\t冰毒\n冰毒 ",
    "加 V 了 解 一 下 mm52099",
    "冰" * 100_000,
    "x" * 100_000,
    "冰毒 " * 20_000,  # counts past the sublinear-tf table
    "".join(random.Random(1).choice("加微信冰毒出售 😀\x00\uffffaZ09.:/_-") for _ in range(100_000)),
]


def _native_or_skip() -> None:
    if m._native_module() is None:
        if REQUIRE:
            pytest.fail(
                "QINGLANG_REQUIRE_NATIVE=1 but classifier._native did not build (C compiler, headers?)"
            )
        pytest.skip("classifier._native is not built")


@pytest.fixture(scope="module")
def native() -> m.Classifier:
    _native_or_skip()
    return m.load(native=True)


@pytest.fixture(scope="module")
def python() -> m.Classifier:
    return m.load(native=False)


def test_native_scorer_is_built_where_required() -> None:
    if not REQUIRE:
        pytest.skip("QINGLANG_REQUIRE_NATIVE is not 1 (scripts/test sets it)")
    assert m._native_module() is not None, "classifier._native did not build"
    assert classifier.load().scorer.native, "the default load does not use the compiled scorer"


def test_switches(native: m.Classifier, python: m.Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.scorer.native and not python.scorer.native
    monkeypatch.setenv("QINGLANG_NATIVE", "0")
    assert not m.load().scorer.native
    assert m.load(native=True).scorer.native  # an explicit choice wins over the environment
    monkeypatch.setenv("QINGLANG_NATIVE", "1")
    assert m.load().scorer.native


@pytest.fixture(scope="module")
def corpus(python: m.Classifier) -> tuple[list[str], np.ndarray]:
    """The project's own corpus and scikit-learn's probabilities for it."""
    cfg = GeneratorConfig(seed=11, per_category=250, ok_templated=500, background=500)
    texts = [e.text for e in generate(load_seeds(), cfg)] + BAD_INPUTS[:17]
    return texts, python.pipeline.predict_proba(texts)


@pytest.mark.parametrize("kind", ["native", "python"])
def test_both_scorers_equal_the_pipeline(
    kind: str, request: pytest.FixtureRequest, corpus: tuple[list[str], np.ndarray]
) -> None:
    clf: m.Classifier = request.getfixturevalue(kind)
    assert clf.scorer.native == (kind == "native")
    texts, ref = corpus
    classes = clf.scorer.classes
    got = np.array([[clf.scores(t)[c] for c in classes] for t in texts])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    verdicts = np.array([[clf.classify(t).scores[c] for c in classes] for t in texts])
    np.testing.assert_allclose(verdicts, ref, rtol=0, atol=1e-9)


def _assert_same_verdict(a: classifier.Verdict, b: classifier.Verdict, text: str) -> None:
    where = repr(text[:80])
    assert (a.label, a.action, a.model_version) == (b.label, b.action, b.model_version), where
    assert abs(a.score - b.score) <= 1e-12, where
    assert a.scores.keys() == b.scores.keys(), where
    assert all(abs(a.scores[k] - b.scores[k]) <= 1e-12 for k in a.scores), where
    assert a.reasons == b.reasons, where  # terms, contacts, top features and their positions


def test_identical_verdicts_on_generated_lines_and_bad_input(
    native: m.Classifier, python: m.Classifier
) -> None:
    cfg = GeneratorConfig(seed=23, per_category=400, ok_templated=800, background=800)
    texts = [e.text for e in generate(load_seeds(), cfg)]
    assert len(texts) >= 3000
    lenient = {c: 0.05 for c in native.categories}
    flagged = 0
    for text in texts + BAD_INPUTS:
        for thresholds in (None, lenient):
            a, b = native.classify(text, thresholds), python.classify(text, thresholds)
            _assert_same_verdict(a, b, text)
            flagged += a.action != "pass"
    assert flagged > 1000  # the top features of many labels were compared, not only "ok"


def test_identical_features(native: m.Classifier, python: m.Classifier) -> None:
    """Same columns in the same order (first appearance), same values, with contacts passed in or not."""
    from classifier.contacts import extract_contacts

    cfg = GeneratorConfig(seed=29, per_category=100, ok_templated=200, background=200)
    texts = [python.normalizer.normalize_text(e.text) for e in generate(load_seeds(), cfg)]
    for text in texts + [m._clean(t) for t in BAD_INPUTS]:
        for contacts in (None, extract_contacts(text)):
            nc, nv = native.scorer.features(text, contacts)
            pc, pv = python.scorer.features(text, contacts)
            assert nc.tolist() == pc.tolist(), repr(text[:80])
            np.testing.assert_allclose(nv, pv, rtol=0, atol=1e-12)
            npr, _, _ = native.scorer.proba(text, contacts)
            ppr, _, _ = python.scorer.proba(text, contacts)
            np.testing.assert_allclose(npr, ppr, rtol=0, atol=1e-12)


_ODD_CHARS = st.one_of(
    st.characters(exclude_categories=()),  # every code point, lone surrogates included
    st.sampled_from(list("加微信冰毒出售刷单日结 \t\n\u3000\x00\uffff😀𝕏aZ09.:/_-@")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(_ODD_CHARS, max_size=300))
def test_identical_verdicts_on_any_text(native: m.Classifier, python: m.Classifier, text: str) -> None:
    _assert_same_verdict(native.classify(text), python.classify(text), text)


# --- a small synthetic model: the binary case, ties, and misuse ---------------------------------------

_WORD_VOCAB = ["加", "微信", "加 微信", "冰毒", "了解", "一下", "了解 一下", "出", "出 冰毒", "a b"]
_CHAR_VOCAB = [
    "加",
    "微",
    "信",
    "冰",
    "毒",
    "加 微",
    "微 信",
    "加 微 信",
    "冰 毒",
    "😀",
    "\x00",
    "\uffff",
    "a",
    "a b",
]
_CONTACT_VOCAB = ["__contact_wechat__", "__contact_phone__", "__contact_multi__"]
# toneless syllables, one-letter ones (啊 is "a", like the letter), raw characters, a private-use one
_SOUND_VOCAB = [
    "jian zhi",
    "ri jie",
    "jia wei xin",
    "a a",
    "a b",
    "\ue005 a",
    "jie 5",
    "5 5 5",
    "chu bing du",
]


def _synthetic(n_out: int, native: bool, *, ties: bool = False) -> m.FastScorer:
    rng = np.random.default_rng(n_out)
    n = len(_WORD_VOCAB) + len(_CHAR_VOCAB) + len(_CONTACT_VOCAB) + len(_SOUND_VOCAB)
    coef = rng.normal(size=(n, n_out))
    idf = 1.0 + rng.random(n)
    if ties:  # equal contributions: the order of first appearance must break the ties
        coef[:] = 0.5
        idf[:] = 2.0
    classes = ("ok", "drug") if n_out == 1 else ("ok", "drug", "fraud")[:n_out]
    vocabs = {"word": _WORD_VOCAB, "char": _CHAR_VOCAB, "contact": _CONTACT_VOCAB, "sound": _SOUND_VOCAB}
    params = m.ModelParams(sound_ngrams=(2, 3))  # whatever the default: the vocabulary has trigrams ("5 5 5")
    return m.FastScorer(classes, coef, rng.normal(size=n_out), idf, vocabs, ["加微信"], params, native)


_SYNTHETIC_TEXTS = [
    "加微信了解一下",
    "出冰毒 出冰毒",
    "",
    "😀 a b 加微信\x00\uffff",
    "冰" * 5000,
    "a b a b",
    "了解一下",
    "兼职日洁 煎枝 日结5",
    "啊啊 aa 啊a \ue005啊 \ue005a",
    "555 ５５５ 接5",
]


@pytest.mark.parametrize(("n_out", "ties"), [(1, False), (3, False), (3, True)])
def test_synthetic_models_both_paths(n_out: int, ties: bool) -> None:
    _native_or_skip()
    nat, py = _synthetic(n_out, True, ties=ties), _synthetic(n_out, False, ties=ties)
    contacts = [
        None,
        [],
        m.extract_contacts("加微信 abc12345 电话13812345678"),
    ]
    for text in _SYNTHETIC_TEXTS:
        for cs in contacts:
            a, b = nat._score(text, cs), py._score(text, cs)
            np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-12)
            assert abs(sum(a.probs) - 1.0) < 1e-12
            for label in nat.classes:
                for k in (0, 1, 3, 5, 100):
                    assert nat._top(a, label, k) == py._top(b, label, k), (text, label, k)
    found = {nat.name(c) for t in _SYNTHETIC_TEXTS for c in nat.features(t)[0].tolist()}
    assert {
        "sound:jian zhi",
        "sound:a a",
        "sound:\ue005 a",
        "sound:5 5 5",
        "word:了解 一下",
        "char:😀",
    } <= found


def _core_args(sc: m.FastScorer) -> dict:
    """What FastScorer gives _native.Scorer (bigram table left empty)."""
    return dict(
        rows=sc._rows,
        intercept=sc._intercept,
        tf=sc._tf.tolist(),
        n_classes=len(sc.classes),
        word_map=sc.maps["word"],
        pair_map={},
        char_map=sc.maps["char"],
        contact_map=sc.maps["contact"],
        word_hi=2,
        char_lo=1,
        char_hi=3,
    )


def test_misuse_raises_instead_of_crashing() -> None:
    _native_or_skip()
    from classifier import _native

    sc = _synthetic(3, True)
    core = sc._native
    with pytest.raises(TypeError):
        _native.Scorer()  # type: ignore[call-arg]
    with pytest.raises(RuntimeError):  # not initialized
        _native.Scorer.__new__(_native.Scorer).score([], "", [])
    with pytest.raises(TypeError):  # only the module makes results
        type(core.score([], "", []))()
    for words, text, contacts in [
        (("加",), "加", []),
        (["加", 1], "加", []),
        (["加"], b"x", []),
        (["加"], "加", None),
        (["加"], "加", ["__contact_wechat__", None]),
    ]:
        with pytest.raises(TypeError):
            core.score(words, text, contacts)
    s = core.score(["加", "微信"], "加微信", [])
    with pytest.raises(IndexError):
        s.top(-1, 5)
    with pytest.raises(IndexError):
        s.top(3, 5)
    assert s.top(0, -3) == [] and s.top(0, 0) == []
    assert len(s.top(1, 10**9)) <= len(s.cols)

    args = _core_args(sc)
    with pytest.raises(RuntimeError):  # a second __init__
        core.__init__(**args)
    bad: list[dict[str, Any]] = [
        {"rows": sc._rows.astype(np.int64)},
        {"rows": np.asfortranarray(sc._rows)},
        {"rows": sc._rows[:, :1]},
        {"rows": sc._rows.ravel()},
        {"n_classes": 4},
        {"intercept": [0.0]},
        {"tf": [1.0]},
        {"word_map": {"加": len(sc._rows)}},
        {"word_map": {"加": -1}},
        {"contact_map": {b"x": 0}},
        {"char_map": {"abcd": 0}},
        {"char_map": {"": 0}},
        {"pair_map": {("a",): 0}},
        {"pair_map": {("a", "b"): 10**6}},
        {"word_hi": 3},
        {"char_lo": 0},
        {"char_hi": 4},
    ]
    for change in bad:
        with pytest.raises((TypeError, ValueError, BufferError)):
            _native.Scorer(**{**args, **change})
    half = _native.Scorer.__new__(_native.Scorer)
    with pytest.raises(ValueError):
        half.__init__(**{**args, "char_map": {"abcd": 0}})
    with pytest.raises(RuntimeError):  # a failed __init__ leaves it unusable, not half built
        half.score([], "", [])
    # A key put into a map after the build whose __eq__ empties the token list mid-call: the call
    # works on its own copy of the tokens (freshly made strings, nothing else holds them).
    tokens = ["加" + str(i) for i in range(50)]

    class Evil:
        def __hash__(self) -> int:
            return hash(tokens[0])

        def __eq__(self, other: object) -> bool:
            tokens.clear()
            return False

    evil_map: dict[Any, int] = {"x": 0}
    core3 = _native.Scorer(**{**args, "word_map": evil_map})
    evil_map[Evil()] = 1
    assert len(core3.score(tokens, "加加", []).probs) == 3
    assert tokens == []
    # The maps stay the caller's: a column changed after the build is checked at every lookup.
    word_map: dict[str, Any] = dict(sc.maps["word"])
    core2 = _native.Scorer(**{**args, "word_map": word_map})
    word_map["加"] = 10**9
    with pytest.raises(ValueError):
        core2.score(["加"], "加", [])
    word_map["加"] = "x"
    with pytest.raises(TypeError):
        core2.score(["加"], "加", [])


def test_no_leaked_references_or_memory(native: m.Classifier) -> None:
    """Every object a call touches has the same reference count after 3,000 calls, and RSS stays put
    over 30,000 (failed calls included)."""
    from classifier import _native

    sc = native.scorer
    core = sc._native
    cut = sc._words._cut or sc._words._build()
    text = "加微信了解一下 出冰毒 😀 abc12345"
    words = cut(text)
    tokens = ["__contact_" + kind + "__" for kind in ("wechat", "multi")]  # not the interned constants
    # One-character tokens are the interpreter's shared singletons: other threads move their counts.
    mine = [w for w in words if len(w) > 1]
    assert mine
    watched = [core, text, words, tokens, *mine, *tokens, sc.maps["word"], sc.maps["char"], _native.Scored]
    before = [sys.getrefcount(x) for x in watched]
    for _ in range(3000):
        s = core.score(words, text, tokens)
        s.top(1, 5)
        s.probs, s.cols, s.vals  # noqa: B018
    del s
    gc.collect()
    assert [sys.getrefcount(x) for x in watched] == before

    texts = [cut(t) for t in ("加微信了解一下", "冰" * 3000, "")]
    big = "加微信冰毒" * 2000  # past the stack buffer: the heap path
    # a column out of range fails the call after it took its memory: what it took is freed
    word_map = {"加": 0}
    broken = _native.Scorer(**{**_core_args(sc), "word_map": word_map})
    word_map["加"] = 10**9

    def burst(n: int) -> None:
        for i in range(n):
            t = big if i % 50 == 0 else "加微信了解一下 出冰毒"
            s = core.score(texts[i % 3], t, tokens)
            s.top(i % 3, 5)
            with pytest.raises(ValueError):
                broken.score(["加"], t, tokens)

    burst(5000)
    gc.collect()
    rss0 = rss_mb()
    burst(30000)
    gc.collect()
    assert rss_mb() - rss0 < 2.0
