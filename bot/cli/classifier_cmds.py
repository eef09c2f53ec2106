"""CLI for the classifier: classify, train, eval, bench classify.

Machine output (jsonl, the bench JSON line) goes to stdout and nothing else does: logs, progress
and any library chatter go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

LABEL_ZH = {"ok": "正常", "drug": "毒品", "fraud": "诈骗", "obscene": "色情", "gambling": "赌博"}
ACTION_ZH = {"delete": "删除", "review": "人工复核", "pass": "放行"}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Anything printed while the model loads (e.g. jieba's start-up lines) goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _load(model: str | None) -> Any:
    import classifier

    with _quiet_stdout():
        return classifier.load(model)


def _describe(text: str, v: Any) -> str:
    lines = [
        f"label  {v.label} ({LABEL_ZH.get(v.label, v.label)})   score {v.score:.3f}   "
        f"action {v.action} ({ACTION_ZH.get(v.action, v.action)})",
        "scores " + "  ".join(f"{k} {p:.3f}" for k, p in sorted(v.scores.items(), key=lambda kv: -kv[1])),
    ]
    terms = v.reasons.get("terms") or []
    if terms:
        lines.append("seed terms (命中词):")
        lines += [
            f"  {t['term']}  [{t['category']}]  @{t['start']}-{t['end']}  «{text[t['start'] : t['end']]}»"
            for t in terms
        ]
    contacts = v.reasons.get("contacts") or []
    if contacts:
        lines.append("contacts (联系方式):")
        lines += [f"  {c['kind']}: {c['value']}  @{c['start']}-{c['end']}" for c in contacts]
    feats = v.reasons.get("features") or []
    if feats:
        lines.append(f"top features toward {v.label}:")
        lines += [f"  {f['feature']}  {f['weight']:+.3f}" for f in feats]
    lines.append(f"model  {v.model_version}")
    return "\n".join(lines)


# Every command that reads a model takes it the same way.
_model_option = click.option(
    "--model",
    type=click.Path(file_okay=False),
    default=None,
    help="Model directory (default: shipped model).",
)


@click.command("classify")
@click.argument("text", required=False)
@click.option(
    "--file", "infile", type=click.File("r", encoding="utf-8"), help="Read messages from FILE ('-' = stdin)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl"]),
    default=None,
    help="Output: readable text (default for TEXT) or one JSON object per input line (default for --file).",
)
@_model_option
def classify_cmd(text: str | None, infile: Any, fmt: str | None, model: str | None) -> None:
    """Judge TEXT, or every line of --file (JSONL with `text`, or plain text lines)."""
    if (text is None) == (infile is None):
        raise click.UsageError("give either TEXT or --file")
    clf = _load(model)
    if text is not None:
        v = clf.classify(text)
        if fmt == "jsonl":
            click.echo(json.dumps(v.to_dict(), ensure_ascii=False))
        else:
            click.echo(_describe(text, v))
        return
    from classifier.evaluate import iter_texts

    out = sys.stdout
    for line_text in iter_texts(infile):
        v = clf.classify(line_text)
        if fmt == "text":
            out.write(_describe(line_text, v) + "\n\n")
        else:
            out.write(json.dumps(v.to_dict(), ensure_ascii=False) + "\n")
    out.flush()


def _feedback_examples(url: str) -> list[Any]:
    """Admin-labelled examples from the bot's database (review decisions)."""
    import asyncio

    import storage
    from classifier.generate import Example

    async def fetch() -> list[Any]:
        db = await storage.open_database(url, create_if_empty=False)
        try:
            async with db.sessionmaker() as session:
                rows = await storage.list_training_examples(session=session)
                return [(r.text, r.label) for r in rows]
        finally:
            await db.close()

    return [
        Example(text=t, label=lab, shape="feedback") for t, lab in asyncio.run(fetch()) if t and t.strip()
    ]


def _refuse_if_worse(result: Any, seeds: Any, extra: list[Any], target: Path) -> None:
    """Compare the new model with the one it would replace; refuse it when its benign FPR is worse."""
    from bot.feedback import check_candidate
    from classifier import model as m

    current = _load(str(target) if (target / m.SIDECAR).is_file() else None)
    comparison = check_candidate(result, seeds=seeds, extra=extra, current=current)
    for line in comparison.lines():
        click.echo(line, err=True)
    ok, why = comparison.decision()
    if not ok:
        raise click.ClickException(f"not installing model {result.version}: {why}")
    click.echo(f"accepted: {why}", err=True)


@click.command("train")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write the model directory (default: ./qinglang-model).",
)
@click.option(
    "--install", is_flag=True, help="Write to the package's default model directory (what load() uses)."
)
@click.option("--seed", type=int, default=None, help="Generator random seed (default 0).")
@click.option(
    "--seeds",
    "seeds_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Seed directory (default: the package's seeds).",
)
@click.option("--examples", type=int, default=None, help="Generated lines per category (ok: twice that).")
@click.option("--background", type=int, default=None, help="Real background sentences added as ok.")
@click.option(
    "--with-feedback",
    "feedback_url",
    default=None,
    metavar="DATABASE_URL",
    help="Also learn from admins' review decisions stored in this database.",
)
def train_cmd(
    out: str | None,
    install: bool,
    seed: int | None,
    seeds_dir: str | None,
    examples: int | None,
    background: int | None,
    feedback_url: str | None,
) -> None:
    """Generate examples from the seeds, fit the model, choose thresholds, save it."""
    from classifier import model as m
    from classifier.generate import GeneratorConfig
    from classifier.seeds import load_seeds

    if install and out:
        raise click.UsageError("give --out or --install, not both")
    target = m.DEFAULT_MODEL_DIR if install else Path(out or "qinglang-model")
    seeds = load_seeds(seeds_dir)
    gen = GeneratorConfig()
    if seed is not None:
        gen = replace(gen, seed=seed)
    if examples is not None:
        gen = replace(gen, per_category=examples, ok_templated=2 * examples)
    if background is not None:
        gen = replace(gen, background=background)
    extra = _feedback_examples(feedback_url) if feedback_url else []
    stages = ["generating examples", "vectorizing", "fitting", "choosing thresholds", "saving"]
    t0 = time.perf_counter()
    with (
        _quiet_stdout(),
        click.progressbar(
            length=len(stages), label="training", file=sys.stderr, show_eta=False, item_show_func=lambda s: s
        ) as bar,
    ):
        done = 0

        def progress(msg: str) -> None:
            nonlocal done
            bar.update(1 if done else 0, msg)
            done += 1

        result = m.train(seeds, gen, extra=extra, progress=progress)
        if feedback_url:
            _refuse_if_worse(result, seeds, extra, target)  # bot/feedback.py: compare before installing
        bar.update(1, "saving")
        m.save(result, target)
        bar.update(1, "done")
    took = time.perf_counter() - t0
    met = result.metrics
    click.echo(f"model {result.version} written to {target}")
    click.echo(
        f"trained on {met['n_train']} examples ({len(extra)} from feedback), "
        f"{met['n_heldout']} of them scored by fold fits that never saw their shape (thresholds), "
        f"refit on all, in {took:.1f} s"
    )
    click.echo(
        "thresholds (delete / review): "
        + ", ".join(
            f"{c} {result.thresholds.delete[c]:.2f}/{result.thresholds.review[c]:.2f}"
            for c in result.categories
        )
    )
    click.echo("held-out shapes (generated; fitted without them, at the chosen thresholds):")
    for c, v in met["per_label"].items():
        click.echo(
            f"  {c:<9} precision {v['precision']:.3f}  recall {v['recall']:.3f}  F1 {v['f1']:.3f}  n {v['n']}"
        )
    click.echo(
        f"  benign flag rate {met['heldout_benign_flag_rate']:.4f}   macro-F1 {met['heldout_macro_f1']:.4f}"
    )
    click.echo("generated data is easy; measure on real messages with `qinglang eval FILE`.")


@click.command("eval")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@_model_option
@click.option("--json", "as_json", is_flag=True, help="End with the summary as one JSON line as well.")
def eval_cmd(file: str, model: str | None, as_json: bool) -> None:
    """Measure the model on FILE (JSONL: text, label, optional source and note)."""
    from classifier.evaluate import evaluate, format_report, read_jsonl, summary_json

    clf = _load(model)
    report = evaluate(clf, read_jsonl(file))
    for line in format_report(report):
        click.echo(line)
    if as_json:
        click.echo(summary_json(report))


@click.command("classify")
@_model_option
@click.option("-n", "count", type=int, default=5000, show_default=True, help="Messages to classify.")
@click.option("--train", "measure_train", is_flag=True, help="Also time a full training run (about 40 s).")
def bench_classify(model: str | None, count: int, measure_train: bool) -> None:
    """Single-thread classify() speed on 10-100 character messages, load time, memory."""
    from classifier.bench import run_bench

    with _quiet_stdout():
        figures = run_bench(
            model, count=count, measure_train=measure_train, log=lambda s: click.echo(s, err=True)
        )
    rows = [
        ("messages", f"{figures['messages']}"),
        ("throughput", f"{figures['msgs_per_s']:.0f} msg/s"),
        ("latency p50", f"{figures['p50_ms']:.3f} ms"),
        ("latency p99", f"{figures['p99_ms']:.3f} ms"),
        ("latency max", f"{figures['max_ms']:.3f} ms"),
        ("model load", f"{figures['load_s']:.2f} s"),
        (
            "training",
            f"{figures['train_s']:.1f} s" if figures.get("train_s") is not None else "not measured (--train)",
        ),
        ("RSS", f"{figures['rss_mb']:.0f} MB"),
        ("CPU/msg", f"{figures['cpu_s_per_msg_ms']:.3f} ms (process CPU time: less sensitive to other jobs)"),
        ("load avg", f"{figures['loadavg_1m']} (1 min, while measured; other jobs slow every figure)"),
    ]
    click.echo("qinglang bench classify")
    for k, v in rows:
        click.echo(f"  {k:<12} {v}")
    click.echo(json.dumps(figures, ensure_ascii=False))


@click.command("evasion")
@_model_option
@click.option(
    "--per-category", type=int, default=300, show_default=True, help="Generated solicitations per category."
)
@click.option(
    "--rate", type=float, default=0.3, show_default=True, help="Chance that a Han character is swapped."
)
@click.option(
    "--seed", type=int, default=99, show_default=True, help="Generator and swap seed (the model trains on 0)."
)
def bench_evasion(model: str | None, per_category: int, rate: float, seed: int) -> None:
    """Solicitations flagged as written and with characters swapped for same-sound ones (homophones)."""
    from classifier.bench import run_evasion_bench

    with _quiet_stdout():
        figures = run_evasion_bench(
            model, per_category=per_category, rate=rate, seed=seed, log=lambda s: click.echo(s, err=True)
        )
    click.echo("qinglang bench evasion")
    for key, value in figures.items():
        if key.startswith("flagged_") or key == "changed_characters":
            click.echo(f"  {key:<28} {100 * value:.1f}%")
    click.echo(json.dumps(figures, ensure_ascii=False))


def register(main: click.Group, bench: click.Group) -> None:
    """Attach this area's commands to the top-level group and the bench group."""
    main.add_command(classify_cmd)
    main.add_command(train_cmd)
    main.add_command(eval_cmd)
    bench.add_command(bench_classify)
    bench.add_command(bench_evasion)
