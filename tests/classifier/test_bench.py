"""The evasion bench's same-sound swaps, and the bench itself on a few lines."""

from __future__ import annotations

from classifier.bench import run_evasion_bench, same_sound_swaps
from classifier.features import sound_table

COMMON = list("兼煎简间职直值日结洁节加家佳伽微薇威信心新冰兵病毒独读出初货或")
TEXTS = ["诚招兼职日结加微信", "冰毒出货", "abc 123，好的"]


def test_same_sound_swaps_keep_every_syllable() -> None:
    table = sound_table()
    out = same_sound_swaps(TEXTS, COMMON, 1.0, seed=3)
    assert out != TEXTS  # every character with a same-sound partner in COMMON is swapped
    for text, swapped in zip(TEXTS, out, strict=True):
        assert len(swapped) == len(text)
        for a, b in zip(text, swapped, strict=True):
            assert table.get(ord(a)) == table.get(ord(b)), (a, b)
            assert a == b or a in COMMON
    assert out[2] == TEXTS[2]  # nothing to swap in Latin letters, digits and marks
    assert same_sound_swaps(TEXTS, COMMON, 1.0, seed=3) == out  # deterministic
    assert same_sound_swaps(TEXTS, COMMON, 0.0, seed=3) == TEXTS


def test_evasion_bench_reports_both_readings() -> None:
    figures = run_evasion_bench(per_category=15, log=lambda _s: None)
    assert figures["messages"] == 60
    assert figures["flagged_written"] >= 0.9  # generated solicitations of the shapes the model knows
    assert 0.0 <= figures["flagged_same_sound"] <= 1.0
    assert 0.05 < figures["changed_characters"] < 0.3  # rate 0.3 of the characters that have a partner
