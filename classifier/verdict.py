"""The Verdict (docs/interfaces.md) and the three-tier decision that produces its action."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """What the classifier says about one message, with the named reasons that led there.

    `label` is the top prohibited category when `action` is delete or review, else "ok";
    `score` is the probability of `label`; `scores` has every label's probability.
    """

    label: str
    score: float
    action: str  # delete | review | pass
    scores: Mapping[str, float]
    reasons: Mapping[str, Any] = field(default_factory=dict)
    model_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "label": self.label,
            "score": round(float(self.score), 6),
            "action": self.action,
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
            "reasons": {
                "terms": [dict(t) for t in self.reasons.get("terms", [])],
                "features": [dict(f) for f in self.reasons.get("features", [])],
                "contacts": [dict(c) for c in self.reasons.get("contacts", [])],
            },
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class Thresholds:
    """Per-category probability thresholds: at or above `delete` -> delete, `review` -> review."""

    delete: Mapping[str, float]
    review: Mapping[str, float]

    def with_overrides(self, overrides: Mapping[str, float] | None) -> Thresholds:
        """Per-chat delete thresholds; review never sits above the delete threshold."""
        if not overrides:
            return self
        delete = dict(self.delete)
        review = dict(self.review)
        for cat, value in overrides.items():
            if cat in delete and value is not None:
                v = min(1.0, max(0.0, float(value)))
                delete[cat] = v
                review[cat] = min(review[cat], v)
        return Thresholds(delete=delete, review=review)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"delete": dict(self.delete), "review": dict(self.review)}


def decide(
    scores: Mapping[str, float], categories: tuple[str, ...], thresholds: Thresholds
) -> tuple[str, str]:
    """(label, action) from the label probabilities.

    The action is judged on the probability that the message is any solicitation (1 - p(ok)),
    against the thresholds of the most probable category: a message split 45/40 between drug
    and obscene is still plainly not ok.
    """
    probs = [scores.get(c, 0.0) for c in categories]
    best = max(zip(probs, categories, strict=True))[1]  # a tie on probability: the greater name
    p = sum(probs)
    if p >= thresholds.delete[best]:
        return best, "delete"
    if p >= thresholds.review[best]:
        return best, "review"
    return "ok", "pass"
