"""Measure a classifier on labelled real messages (JSONL: text, label, optional source and note).

A message counts as flagged as category C when the verdict's action is delete or review with
label C. Label `other` (harmful text outside our categories) is neither a miss nor a false
positive: only its flag rate is reported.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HARD_NEGATIVE = "hard_negative"


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; blank lines skipped."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                if "text" not in row or "label" not in row:
                    raise ValueError(f"{path}:{n}: needs `text` and `label`")
                rows.append(row)
    return rows


def _prf(tp: int, pp: int, ap: int) -> dict[str, float]:
    p = tp / pp if pp else 0.0
    r = tp / ap if ap else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "n": ap}


def score_rows(
    rows: Sequence[Mapping[str, Any]], preds: Sequence[tuple[str, str]], categories: Sequence[str]
) -> dict:
    """Figures for `rows` given (label, action) predictions in the same order."""
    labels = ["ok", *categories]
    y = [r["label"] for r in rows]
    p = [lab if act != "pass" else "ok" for lab, act in preds]
    deleted = [act == "delete" for _, act in preds]
    out: dict[str, Any] = {"n": len(rows)}
    scored = [(a, b) for a, b in zip(y, p, strict=True) if a in labels]
    per = {}
    for c in labels:
        tp = sum(1 for a, b in scored if a == c and b == c)
        pp = sum(1 for _, b in scored if b == c)
        ap = sum(1 for a, _ in scored if a == c)
        per[c] = _prf(tp, pp, ap)
    out["per_label"] = per
    present = [c for c in categories if per[c]["n"] > 0]
    out["macro_f1"] = sum(per[c]["f1"] for c in present) / len(present) if present else 0.0
    out["macro_f1_categories"] = present
    ok_idx = [i for i, a in enumerate(y) if a == "ok"]
    out["benign_n"] = len(ok_idx)
    out["benign_fpr"] = sum(p[i] != "ok" for i in ok_idx) / len(ok_idx) if ok_idx else 0.0
    out["benign_delete_rate"] = sum(deleted[i] for i in ok_idx) / len(ok_idx) if ok_idx else 0.0
    hn = [i for i in ok_idx if str(rows[i].get("note") or "").startswith(HARD_NEGATIVE)]
    out["hard_negative_n"] = len(hn)
    out["hard_negative_fpr"] = sum(p[i] != "ok" for i in hn) / len(hn) if hn else 0.0
    other = [i for i, a in enumerate(y) if a not in labels]
    out["other_n"] = len(other)
    out["other_flag_rate"] = sum(p[i] != "ok" for i in other) / len(other) if other else 0.0
    confusion: dict[str, Counter] = defaultdict(Counter)
    for a, b, d in zip(y, p, deleted, strict=True):
        confusion[a][b if b == "ok" else f"{b}{'' if d else '?'}"] += 1
    out["confusion"] = {k: dict(v) for k, v in sorted(confusion.items())}
    return out


def evaluate(clf: Any, rows: Sequence[Mapping[str, Any]]) -> dict:
    """Pooled and per-source figures of `clf` on `rows`."""
    categories = tuple(clf.categories)
    preds = []
    for r in rows:
        v = clf.classify(r["text"])
        preds.append((v.label, v.action))
    report = score_rows(rows, preds, categories)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_source[str(r.get("source") or "-")].append(i)
    report["sources"] = {
        s: score_rows([rows[i] for i in idx], [preds[i] for i in idx], categories)
        for s, idx in sorted(by_source.items())
    }
    report["categories"] = list(categories)
    report["model_version"] = clf.version
    return report


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def format_report(report: Mapping[str, Any]) -> list[str]:
    """A readable report; the last lines are a compact summary."""
    cats = report["categories"]
    labels = ["ok", *cats]
    lines = [
        f"model {report['model_version']}  messages {report['n']}",
        "",
        "label       precision  recall     F1      n",
    ]
    for c in labels:
        m = report["per_label"][c]
        lines.append(f"{c:<10} {_pct(m['precision']):>10} {_pct(m['recall']):>7} {m['f1']:6.3f} {m['n']:6d}")
    lines += ["", "confusion (rows: true label; columns: predicted; '?' = review, not delete)"]
    cols = ["ok"] + [f"{c}{s}" for c in cats for s in ("", "?")]
    lines.append(f"{'':<10}" + "".join(f"{c:>10}" for c in cols))
    for true, row in report["confusion"].items():
        lines.append(f"{true:<10}" + "".join(f"{row.get(c, 0):>10d}" for c in cols))
    lines += [
        "",
        "per source" + " " * 22 + "n  benign-FPR  hard-neg-FPR  " + "  ".join(f"rec-{c}" for c in cats),
    ]
    lines[-1] += "  macro-F1  other-flag"
    for s, m in report["sources"].items():
        recs = "  ".join(
            f"{_pct(m['per_label'][c]['recall']) if m['per_label'][c]['n'] else '    -':>{len(c) + 4}}"
            for c in cats
        )
        name = _source_name(s)
        lines.append(
            f"{name:<30} {m['n']:5d}  {_pct(m['benign_fpr']):>10}  {_pct(m['hard_negative_fpr']):>12}  {recs}"
            f"  {m['macro_f1']:8.3f}  {_pct(m['other_flag_rate']):>10}"
        )
    fpr, dele = _pct(report["benign_fpr"]).strip(), _pct(report["benign_delete_rate"]).strip()
    hn, oth = _pct(report["hard_negative_fpr"]).strip(), _pct(report["other_flag_rate"]).strip()
    lines += [
        "",
        f"benign FPR {fpr} of {report['benign_n']} (deleted {dele}); hard negatives {hn} of "
        f"{report['hard_negative_n']}; other flagged {oth} of {report['other_n']}",
        "SUMMARY "
        + " ".join(
            [
                f"fpr={100 * report['benign_fpr']:.1f}%",
                f"hardneg_fpr={100 * report['hard_negative_fpr']:.1f}%",
            ]
            + [
                f"recall_{c}={100 * report['per_label'][c]['recall']:.1f}%"
                for c in cats
                if report["per_label"][c]["n"]
            ]
            + [f"macro_f1={report['macro_f1']:.3f}", f"other_flag={100 * report['other_flag_rate']:.1f}%"]
        ),
    ]
    return lines


def _source_name(source: str) -> str:
    """`owner/repo:dir/file.json` -> `repo:file` (short enough for a table)."""
    repo, _, path = source.partition(":")
    short = repo.rsplit("/", 1)[-1][:12] + (":" + Path(path).stem if path else "")
    return short[:30]


def summary_json(report: Mapping[str, Any]) -> str:
    """The headline figures as one JSON line."""
    cats = report["categories"]
    return json.dumps(
        {
            "model_version": report["model_version"],
            "n": report["n"],
            "benign_fpr": round(report["benign_fpr"], 4),
            "hard_negative_fpr": round(report["hard_negative_fpr"], 4),
            "recall": {
                c: round(report["per_label"][c]["recall"], 4) for c in cats if report["per_label"][c]["n"]
            },
            "macro_f1": round(report["macro_f1"], 4),
            "other_flag_rate": round(report["other_flag_rate"], 4),
        },
        ensure_ascii=False,
    )


def iter_texts(lines: Iterable[str]) -> Iterable[str]:
    """Texts from JSONL-or-plain lines: a JSON object with `text` gives that, anything else the line."""
    for line in lines:
        raw = line.rstrip("\n").rstrip("\r")
        text = raw
        if raw.lstrip().startswith("{"):
            try:
                obj = json.loads(raw)
                if isinstance(obj, dict) and "text" in obj:
                    text = str(obj["text"])
            except json.JSONDecodeError:
                pass
        yield text
