"""The CLI contract: `classify --file` prints one JSON object per input line, in order, and
nothing else on stdout; `classify TEXT`, `eval`, `train` and `bench classify` work."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import classifier


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_ql_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


_tg = _sibling("test_generate")
TINY_COMMON, TINY_FRAUD, TINY_OK, write_seeds = _tg.TINY_COMMON, _tg.TINY_FRAUD, _tg.TINY_OK, _tg.write_seeds


LINES = [
    json.dumps({"text": "兼职刷单日结，加V了解"}, ensure_ascii=False),
    "今晚一起吃火锅吗",
    "",
    json.dumps({"text": "出冰，同城可送", "id": 7}, ensure_ascii=False),
    "{not json at all",
    json.dumps({"text": "😀"}),
    "   ",
    json.dumps({"text": "反诈提醒：刷单就是诈骗"}, ensure_ascii=False),
]


def qinglang(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh process, so start-up chatter would show on stdout."""
    return subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )


def test_classify_file_jsonl_contract(tmp_path: Path) -> None:
    infile = tmp_path / "in.jsonl"
    infile.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    res = qinglang("classify", "--file", str(infile), "--format", "jsonl")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert len(out) == len(LINES)
    objs = [json.loads(line) for line in out]  # every stdout line is JSON: nothing else got there
    for obj in objs:
        assert {"label", "score", "action", "reasons"} <= set(obj)
    clf = classifier.load()
    texts = [json.loads(x)["text"] if x.startswith('{"') else x for x in LINES]
    for obj, text in zip(objs, texts, strict=True):
        v = clf.classify(text)
        assert (obj["label"], obj["action"]) == (v.label, v.action)
        assert abs(obj["score"] - v.score) < 1e-5


def test_classify_stdin_defaults_to_jsonl() -> None:
    res = qinglang("classify", "--file", "-", stdin="加V刷单\n冰糖雪梨\n")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["label"] for x in res.stdout.splitlines()].__len__() == 2


def test_classify_text_is_readable() -> None:
    res = qinglang("classify", "兼职刷单日结，一单一结，加V：abc123")
    assert res.returncode == 0, res.stderr
    assert "label" in res.stdout and "action" in res.stdout and "诈骗" in res.stdout


def test_eval_prints_figures_and_summary(tmp_path: Path) -> None:
    rows = [
        {"text": "兼职刷单日结，一单一结，加V了解", "label": "fraud", "source": "a"},
        {"text": "今晚吃火锅吗", "label": "ok", "source": "a"},
        {"text": "警方提醒：刷单就是诈骗", "label": "ok", "source": "b", "note": "hard_negative: warning"},
        {"text": "你这个人真烦", "label": "other", "source": "b"},
    ]
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    res = qinglang("eval", str(f), "--json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-2].startswith("SUMMARY ")
    summary = json.loads(lines[-1])
    assert summary["hard_negative_fpr"] == 0.0
    assert "confusion" in res.stdout and "per source" in res.stdout


def test_train_writes_a_loadable_model(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds", common=TINY_COMMON, fraud=TINY_FRAUD, ok=TINY_OK)
    out = tmp_path / "model"
    res = qinglang(
        "train", "--seeds", str(seeds), "--out", str(out), "--examples", "300", "--background", "300"
    )
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout
    clf = classifier.load(out)
    assert clf.classify("急招刷单，日结300元，加Vabc123").label == "fraud"


def test_bench_classify_ends_with_json() -> None:
    res = qinglang("bench", "classify", "-n", "300")
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("msgs_per_s", "p50_ms", "p99_ms", "load_s", "rss_mb"):
        assert figures[key] > 0
