"""Learning from admins: the comparison that decides whether a feedback-trained model is installed,
and the model reload on SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import storage
from bot import admin
from bot.feedback import compare, measure, read_feedback


@dataclass
class Rule:
    """A stand-in classifier: flags as fraud every text containing one of `flags`."""

    flags: tuple[str, ...]
    version: str = "v"

    def classify(self, text: str, thresholds: Any = None) -> Any:
        hit = any(f in text for f in self.flags)
        return SimpleNamespace(label="fraud" if hit else "ok", action="delete" if hit else "pass")


HELDOUT = [("刷单日结", "fraud"), ("今天吃什么", "ok"), ("兼职刷单", "fraud"), ("团购水果", "ok")]
FEEDBACK = [("团购水果便宜", "ok"), ("跑分日入过万", "fraud")]


def test_measure() -> None:
    figures = measure(Rule(("刷单", "团购")), HELDOUT)
    assert (figures.n, figures.benign_n, figures.benign_fpr, figures.accuracy) == (4, 2, 0.5, 0.75)


@pytest.mark.parametrize(
    ("current", "candidate", "install", "why"),
    [
        (("刷单",), ("刷单", "跑分"), True, "learns the feedback, no new false positives"),
        (("刷单",), ("刷单", "团购"), False, "flags benign group-buying: worse FPR on both sets"),
        (("刷单", "团购"), ("刷单",), True, "fewer false positives is always welcome"),
        (("刷单",), ("刷单", "便宜"), False, "worse only on the feedback"),
    ],
)
def test_decision_refuses_a_worse_benign_fpr(
    current: tuple[str, ...], candidate: tuple[str, ...], install: bool, why: str
) -> None:
    result = compare(Rule(current, "old"), Rule(candidate, "new"), heldout=HELDOUT, feedback=FEEDBACK)
    ok, reason = result.decision()
    assert ok is install, why
    if not ok:
        assert "benign false-positive rate" in reason and "worse" in reason
    assert result.lines()[0] == "current old  vs  new new"


async def test_read_feedback_keeps_known_labels(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
    db = await storage.open_database(url)
    async with db.sessionmaker.begin() as session:
        for text, label in [("团购水果", "ok"), ("跑分", "fraud"), ("  ", "ok"), ("x", "weird")]:
            await storage.add_training_example(session=session, text=text, label=label, actor_id=1)
    await db.close()
    assert await read_feedback(url) == [("团购水果", "ok"), ("跑分", "fraud")]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX only")
async def test_sighup_reloads_the_model() -> None:
    old = SimpleNamespace(version="old")
    services = SimpleNamespace(classifier=old, settings=SimpleNamespace(model_path=None))
    app = SimpleNamespace(post_init=None, bot_data=SimpleNamespace(services=services))
    admin.install_sighup_reload(app)  # type: ignore[arg-type]
    await app.post_init(app)
    loop = asyncio.get_running_loop()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):  # the reload loads the model in a thread
            if services.classifier is not old:
                break
            await asyncio.sleep(0.05)
        assert services.classifier is not old and services.classifier.version
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
