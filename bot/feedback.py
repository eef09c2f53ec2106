"""Learning from admins: `qinglang train --with-feedback DATABASE_URL`.

The admins' decisions (review buttons, /spam, /notspam) are stored as training examples. Training adds
them to the generated corpus; before the new model is installed it is compared with the current one on
the new model's held-out generated split and on the feedback itself, and it is refused when its benign
false-positive rate (share of `ok` messages it would delete or send for review) is worse on either.

Neither set is unseen by the models compared: training chooses the thresholds on a first fit that
leaves the held-out shapes out, then refits the shipped model on everything (classifier/model.py). The
generated held-out lines are thus in both models' training data, and the feedback is in the
candidate's (the current model's only if it was trained with feedback too). The check catches a
candidate that the feedback made worse on data it was fitted on; it says nothing of new messages,
which the held-out figures in each model's sidecar (from that first fit) speak for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FEEDBACK_SHAPE = "feedback"
LABELS = ("ok", "drug", "fraud", "obscene", "gambling")


@dataclass(frozen=True, slots=True)
class Figures:
    """How one model does on one labelled set."""

    n: int
    benign_n: int
    benign_fpr: float  # ok-labelled examples flagged (delete or review)
    accuracy: float  # examples whose outcome (category flagged, or ok passed) matches their label


def measure(clf: Any, examples: Iterable[tuple[str, str]]) -> Figures:
    """Figures of `clf` on (text, label) pairs."""
    n = benign = benign_flagged = right = 0
    for text, label in examples:
        verdict = clf.classify(text)
        predicted = verdict.label if verdict.action in ("delete", "review") else "ok"
        n += 1
        right += predicted == label
        if label == "ok":
            benign += 1
            benign_flagged += predicted != "ok"
    return Figures(
        n=n,
        benign_n=benign,
        benign_fpr=benign_flagged / benign if benign else 0.0,
        accuracy=right / n if n else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """The current and the candidate model on the held-out split and on the feedback."""

    current_version: str
    candidate_version: str
    heldout: tuple[Figures, Figures]  # (current, candidate)
    feedback: tuple[Figures, Figures]

    def decision(self) -> tuple[bool, str]:
        """(install?, why). Refused when the benign FPR is worse on either set."""
        problems = []
        for name, (cur, new) in (("held-out split", self.heldout), ("admin feedback", self.feedback)):
            if new.benign_n and new.benign_fpr > cur.benign_fpr:
                problems.append(
                    f"benign false-positive rate on the {name} is worse: "
                    f"{new.benign_fpr:.2%} vs {cur.benign_fpr:.2%} ({new.benign_n} benign examples)"
                )
        if problems:
            return False, "; ".join(problems)
        return True, "benign false-positive rate is no worse on the held-out split or the feedback"

    def lines(self) -> list[str]:
        out = [f"current {self.current_version}  vs  new {self.candidate_version}"]
        for name, (cur, new) in (("held-out", self.heldout), ("feedback", self.feedback)):
            out.append(
                f"  {name:<9} n {new.n:>6}  benign FPR {cur.benign_fpr:.2%} -> {new.benign_fpr:.2%}  "
                f"accuracy {cur.accuracy:.2%} -> {new.accuracy:.2%}"
            )
        return out


def compare(
    current: Any,
    candidate: Any,
    *,
    heldout: Sequence[tuple[str, str]],
    feedback: Sequence[tuple[str, str]],
) -> Comparison:
    """Measure both models on both sets."""
    return Comparison(
        current_version=str(getattr(current, "version", "?")),
        candidate_version=str(getattr(candidate, "version", "?")),
        heldout=(measure(current, heldout), measure(candidate, heldout)),
        feedback=(measure(current, feedback), measure(candidate, feedback)),
    )


def candidate_heldout(result: Any, seeds: Any, extra: Sequence[Any]) -> list[tuple[str, str]]:
    """The generated part of the candidate's first leave-shapes-out fold: shapes its thresholds were
    chosen on (a fold fit left them out; the shipped model was refit on them too)."""
    from classifier.generate import training_corpus
    from classifier.model import shape_folds

    corpus = training_corpus(seeds, result.generator, extra)
    folds = shape_folds(corpus, result.params.heldout_folds, result.generator.seed)
    return [(e.text, e.label) for e, f in zip(corpus, folds, strict=True) if f == 0]


def check_candidate(result: Any, *, seeds: Any, extra: Sequence[Any], current: Any) -> Comparison:
    """Compare a freshly trained model (a classifier TrainResult) with the `current` classifier."""
    from classifier.model import from_result

    feedback = [(e.text, e.label) for e in extra]
    return compare(
        current, from_result(result), heldout=candidate_heldout(result, seeds, extra), feedback=feedback
    )


async def read_feedback(url: str) -> list[tuple[str, str]]:
    """The admins' labelled examples from the bot's database: (text, label), labels we know only."""
    import storage

    db = await storage.open_database(url, create_if_empty=False)
    try:
        async with db.sessionmaker() as session:
            rows = await storage.list_training_examples(session=session)
            return [(r.text, r.label) for r in rows if r.text and r.text.strip() and r.label in LABELS]
    finally:
        await db.close()


def feedback_examples(url: str) -> list[Any]:
    """The feedback as classifier training Examples (shape "feedback")."""
    from classifier.generate import Example

    return [Example(text=t, label=lab, shape=FEEDBACK_SHAPE) for t, lab in asyncio.run(read_feedback(url))]
