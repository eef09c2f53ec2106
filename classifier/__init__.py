"""清朗 classifier: text in, Verdict out (pure and synchronous; no Telegram, no database).

import classifier
clf = classifier.load()            # the model shipped in classifier/default_model/
v = clf.classify("出冰 加V")        # Verdict(label, score, action, scores, reasons, model_version)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from classifier.verdict import Verdict

if TYPE_CHECKING:
    from classifier.model import Classifier

CATEGORIES = ("drug", "fraud", "obscene", "gambling")
LABELS = ("ok", *CATEGORIES)

__all__ = ["CATEGORIES", "LABELS", "Verdict", "load"]


def load(path: str | Path | None = None) -> Classifier:
    """Load a model directory; `None` gives the default model shipped with the package."""
    from classifier.model import load as _load

    return _load(path)
