"""Seeds load and validate; the generator is deterministic and applies its evasions."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.generate import (
    BUILTINS,
    EVASIONS,
    GeneratorConfig,
    background_examples,
    corpus_bytes,
    corpus_hash,
    generate,
)
from classifier.seeds import BUILTIN_SLOTS, SeedError, load_seeds

TINY_COMMON = """
[slots]
contact = ["加V{wxid}", "飞机{tg}", "电话{phone}"]
deco_emoji = ["🔥", "✅"]
"""
TINY_FRAUD = """
label = "fraud"
lexicon = ["刷单", "日结"]
[slots]
job = ["刷单", "点赞员", "打字员"]
[[template]]
shape = "recruitment"
weight = 2
lines = ["急招{job}，日结{money}，{contact}", "{job}兼职，一单{num}元，{contact}"]
"""
TINY_OK = """
label = "ok"
lexicon = []
[slots]
food = ["火锅", "烧烤", "冰糖雪梨"]
[[template]]
shape = "food_chat"
lines = ["今晚吃{food}吗", "{city}的{food}最好吃"]
[[template]]
shape = "hard_negative_warning"
lines = ["反诈提醒：刷单就是诈骗", "警方提醒：日结{money}的刷单都是骗局"]
"""


def write_seeds(root: Path, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / f"{name}.toml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds", common=TINY_COMMON, fraud=TINY_FRAUD, ok=TINY_OK)


def test_project_seeds_load_and_cover_the_categories() -> None:
    seeds = load_seeds()
    assert {"drug", "fraud", "obscene", "gambling"} <= set(seeds.categories)
    assert "ok" in seeds.labels
    terms = seeds.lexicon_terms()
    assert ("刷单", "fraud") in terms
    assert all(t.strip() for t, _ in terms)
    shapes = {t.shape for t in seeds.labels["ok"].templates}
    assert any(s.startswith("hard_negative") for s in shapes)


def test_unknown_slot_names_file_and_template(tmp_path: Path) -> None:
    bad = TINY_FRAUD.replace("{contact}", "{contcat}", 1)
    root = write_seeds(tmp_path / "s", common=TINY_COMMON, fraud=bad, ok=TINY_OK)
    with pytest.raises(SeedError) as err:
        load_seeds(root)
    msg = str(err.value)
    assert "fraud.toml" in msg and "recruitment" in msg and "{contcat}" in msg


def test_slot_loop_and_label_mismatch_are_reported(tmp_path: Path) -> None:
    loop = TINY_FRAUD.replace('job = ["刷单",', 'job = ["{again}", "刷单",') + ""
    loop = loop.replace("[slots]\n", '[slots]\nagain = ["{job}"]\n')
    root = write_seeds(tmp_path / "a", common=TINY_COMMON, fraud=loop, ok=TINY_OK)
    with pytest.raises(SeedError, match="loop"):
        load_seeds(root)
    root = write_seeds(
        tmp_path / "b", common=TINY_COMMON, fraud=TINY_FRAUD.replace('"fraud"', '"drug"'), ok=TINY_OK
    )
    with pytest.raises(SeedError, match="does not match the file name"):
        load_seeds(root)
    common = TINY_COMMON + '\n[[template]]\nlabel = "nope"\nshape = "x"\nlines = ["a"]\n'
    root = write_seeds(tmp_path / "c", common=common, fraud=TINY_FRAUD, ok=TINY_OK)
    with pytest.raises(SeedError, match="unknown label"):
        load_seeds(root)


def test_generator_is_byte_for_byte_deterministic(tiny: Path) -> None:
    cfg = GeneratorConfig(seed=3, per_category=400, ok_templated=200, background=100)
    a = corpus_bytes(generate(load_seeds(tiny), cfg))
    b = corpus_bytes(generate(load_seeds(tiny), cfg))
    assert a == b
    other = corpus_bytes(
        generate(
            load_seeds(tiny), GeneratorConfig(seed=4, per_category=400, ok_templated=200, background=100)
        )
    )
    assert other != a


def test_project_corpus_is_deterministic() -> None:
    cfg = GeneratorConfig(seed=0, per_category=300, ok_templated=300, background=0)
    seeds = load_seeds()
    assert corpus_hash(generate(seeds, cfg)) == corpus_hash(generate(seeds, cfg))


def test_generated_lines_are_filled_and_some_are_evasive(tiny: Path) -> None:
    ex = generate(load_seeds(tiny), GeneratorConfig(seed=1, per_category=600, ok_templated=200, background=0))
    assert {e.label for e in ex} == {"fraud", "ok"}
    assert not any("{" in e.text and "}" in e.text for e in ex)
    fraud = [e for e in ex if e.label == "fraud"]
    evasive = [e for e in fraud if e.transform]
    assert 0.2 < len(evasive) / len(fraud) < 0.5
    used = {name for e in evasive for name in e.transform.split("+")}
    assert used <= set(EVASIONS) and len(used) >= 5


def test_background_text_is_real_and_untagged() -> None:
    ex = background_examples(300, seed=0)
    assert len(ex) == 300 and all(e.label == "ok" for e in ex)
    assert {e.shape for e in ex} == {"background_review", "background_news"}
    assert not any("/b " in e.text or "/e " in e.text for e in ex)


def test_the_seed_checker_knows_exactly_the_generators_built_in_slots():
    assert set(BUILTINS) == set(BUILTIN_SLOTS)


def _ends_a_sentence(text: str) -> bool:
    return text.rstrip()[-1:] in {"。", "！", "!", "~", "～", "…", "."}


def test_sentence_marks_are_not_a_sign_of_ok() -> None:
    # Real sentences (the background) end in 。 or ！ about half the time; templates hardly did, so
    # the marks had become evidence of `ok` and "…高价回收！" or "…加我。" read as benign. Every
    # templated label now ends lines with them alike.
    cfg = GeneratorConfig(seed=0, per_category=600, ok_templated=600, background=600)
    ex = generate(load_seeds(), cfg)
    ok_rate = sum(map(_ends_a_sentence, (e.text for e in ex if e.label == "ok"))) / sum(
        e.label == "ok" for e in ex
    )
    for label in ("drug", "fraud", "obscene", "gambling", "ok"):
        lines = [e.text for e in ex if e.label == label and not e.shape.startswith("background")]
        rate = sum(map(_ends_a_sentence, lines)) / len(lines)
        assert rate > ok_rate / 3, (label, rate, ok_rate)
    off = generate(
        load_seeds(), GeneratorConfig(seed=0, per_category=600, ok_templated=600, background=0, punct_share=0)
    )
    fraud_off = [e.text for e in off if e.label == "fraud"]
    assert sum(map(_ends_a_sentence, fraud_off)) / len(fraud_off) < ok_rate / 3
