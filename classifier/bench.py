"""`qinglang bench classify`: single-thread classify() speed, load time, training time, memory."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path


def rss_mb() -> float:
    """Resident memory of this process, MB (Linux /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _loadavg() -> float | None:
    """The 1-minute load average when measured (other jobs on the machine slow every figure)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def sample_messages(count: int, seed: int = 7) -> list[str]:
    """Typical short messages (10-100 characters), solicitations and chat, from the generator."""
    from classifier.generate import GeneratorConfig, background_sentences, generate
    from classifier.seeds import load_seeds

    cfg = GeneratorConfig(seed=seed, per_category=count // 8 + 50, ok_templated=count // 4 + 50, background=0)
    texts = [e.text for e in generate(load_seeds(), cfg, background=False) if 10 <= len(e.text) <= 100]
    texts += [t for t, _ in background_sentences() if 10 <= len(t) <= 100][: count // 4]
    rng = random.Random(seed)
    rng.shuffle(texts)
    while len(texts) < count:
        texts += texts
    return texts[:count]


def run_bench(
    model: str | None = None,
    *,
    count: int = 5000,
    measure_train: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """The figures as a dict (see the CLI for the table)."""
    t0 = time.perf_counter()
    import classifier

    clf = classifier.load(model)
    clf.classify("加微信了解一下")  # first call builds the lazy parts (tokenizer dictionary)
    load_s = time.perf_counter() - t0
    # Which scorer ran: the compiled one (classifier._native) unless it is not built or QINGLANG_NATIVE=0.
    scorer = "native" if clf.scorer.native else "python"
    log(f"model {clf.version} loaded in {load_s:.2f} s ({scorer} scorer)")
    msgs = sample_messages(count)
    for t in msgs[:200]:
        clf.classify(t)
    times = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    start = clock()
    for t in msgs:
        a = clock()
        clf.classify(t)
        times.append(clock() - a)
    total = (clock() - start) / 1e9
    cpu = time.process_time() - cpu0
    times.sort()
    figures = {
        "bench": "classify",
        "model_version": clf.version,
        "scorer": scorer,
        "messages": len(msgs),
        "mean_chars": round(sum(map(len, msgs)) / len(msgs), 1),
        "msgs_per_s": round(len(msgs) / total, 1),
        "p50_ms": round(times[len(times) // 2] / 1e6, 4),
        "p99_ms": round(times[int(len(times) * 0.99)] / 1e6, 4),
        "max_ms": round(times[-1] / 1e6, 4),
        "load_s": round(load_s, 3),
        "train_s": None,
        "rss_mb": round(rss_mb(), 1),
        "cpu_s_per_msg_ms": round(cpu / len(msgs) * 1e3, 4),
        "loadavg_1m": _loadavg(),
    }
    if measure_train:
        from classifier.model import train
        from classifier.seeds import load_seeds

        log("training a model (not saved)...")
        t1 = time.perf_counter()
        train(load_seeds())
        figures["train_s"] = round(time.perf_counter() - t1, 1)
    return figures


def same_sound_swaps(texts: list[str], common: list[str], rate: float, seed: int) -> list[str]:
    """Each text with every Han character in `common` swapped, with probability `rate`, for another
    character of `common` with the same toneless syllable (features.sound_table): a homophone
    evasion nobody wrote a table for. Deterministic for a seed."""
    from classifier.features import sound_table

    table = sound_table()
    by_sound: dict[str, list[str]] = {}
    for ch in common:
        by_sound.setdefault(table[ord(ch)], []).append(ch)
    rng = random.Random(seed)
    out = []
    for text in texts:
        chars = []
        for ch in text:
            others = [c for c in by_sound.get(table.get(ord(ch), ""), ()) if c != ch]
            chars.append(rng.choice(others) if others and rng.random() < rate else ch)
        out.append("".join(chars))
    return out


def run_evasion_bench(
    model: str | None = None,
    *,
    per_category: int = 300,
    rate: float = 0.3,
    seed: int = 99,
    log: Callable[[str], None] = print,
) -> dict:
    """Share of generated solicitations (generator seed `seed`; the shipped model was trained on seed 0)
    flagged as written, and with their characters swapped for same-sound ones (`same_sound_swaps`)."""
    from collections import Counter

    import classifier
    from classifier.features import sound_table
    from classifier.generate import GeneratorConfig, generate, training_corpus
    from classifier.seeds import load_seeds

    clf = classifier.load(model)
    seeds = load_seeds()
    # characters the generator writes often (20+ times in the training corpus): the swaps stay
    # within ordinary characters instead of rare ones no chat would use
    counts = Counter(ch for e in training_corpus(seeds, GeneratorConfig(), ()) for ch in e.text)
    table = sound_table()
    common = sorted(
        ch for ch, n in counts.items() if n >= 20 and "\u4e00" <= ch <= "\u9fff" and ord(ch) in table
    )
    cfg = GeneratorConfig(seed=seed, per_category=per_category, ok_templated=10, background=0)
    bad = [e for e in generate(seeds, cfg, background=False) if e.label in clf.categories]
    written = [e.text for e in bad]
    swapped = same_sound_swaps(written, common, rate, seed)
    log(f"model {clf.version}: {len(bad)} generated solicitations, {len(common)} common characters")
    figures: dict = {
        "bench": "evasion",
        "model_version": clf.version,
        "messages": len(bad),
        "swap_rate": rate,
    }
    for name, texts in (("written", written), ("same_sound", swapped)):
        flagged = [clf.classify(t, reasons="flagged").action != "pass" for t in texts]
        figures[f"flagged_{name}"] = round(sum(flagged) / len(flagged), 4)
        for cat in clf.categories:
            mine = [f for f, e in zip(flagged, bad, strict=True) if e.label == cat]
            if mine:
                figures[f"flagged_{name}_{cat}"] = round(sum(mine) / len(mine), 4)
    changed = sum(a != b for t, s in zip(written, swapped, strict=True) for a, b in zip(t, s, strict=True))
    figures["changed_characters"] = round(changed / max(1, sum(map(len, written))), 4)
    return figures
