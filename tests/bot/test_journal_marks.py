"""Done-marks written in batches (bot/journal.py): waiting marks are never lost to a replay check, and a
mark that never reached the disk only replays its update."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bot.journal import UpdateJournal, split_updates


def _done_on_disk(path: Path) -> set[int]:
    with sqlite3.connect(path) as conn:
        return {uid for (uid,) in conn.execute("SELECT update_id FROM updates WHERE done_at IS NOT NULL")}


def test_marks_wait_for_a_flush_and_unfinished_sees_them(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = UpdateJournal(path)
    assert journal.add([{"update_id": i} for i in range(1, 6)]) == {1, 2, 3, 4, 5}
    assert journal.mark_done([1], flush=False) == 1
    assert journal.mark_done([2], flush=False) == 2
    assert _done_on_disk(path) == set(), "not written yet"
    assert [u["update_id"] for u in journal.unfinished()] == [3, 4, 5], "waiting marks count"
    journal.mark_done([3], flush=False)
    journal.flush_done()
    assert _done_on_disk(path) == {1, 2, 3}
    journal.mark_done([4])  # flush=True: written at once
    assert _done_on_disk(path) == {1, 2, 3, 4}
    journal.mark_done([5], flush=False)
    journal.close()  # writes what is waiting
    assert _done_on_disk(path) == {1, 2, 3, 4, 5}
    journal.flush_done()  # after close: nothing to do, and no connection reopened
    assert journal._conn is None


def test_waiting_marks_are_written_with_the_next_fetched_batch(tmp_path: Path) -> None:
    """Under load a mark costs no transaction of its own: the next batch's commit carries it."""
    path = tmp_path / "journal.sqlite3"
    journal = UpdateJournal(path)
    journal.add([{"update_id": 1}, {"update_id": 2}])
    journal.mark_done([1, 2], flush=False)
    assert _done_on_disk(path) == set()
    assert journal.add_encoded([(3, '{"update_id":3}'), (2, '{"update_id":2}')]) == {3}, "2 was there"
    assert _done_on_disk(path) == {1, 2}
    assert [u["update_id"] for u in UpdateJournal(path).unfinished()] == [3]
    journal.close()


async def test_an_idle_mark_is_written_shortly_after(tmp_path: Path) -> None:
    import asyncio

    from bot.journal import IDLE_FLUSH

    path = tmp_path / "journal.sqlite3"
    journal = UpdateJournal(path)
    journal.add([{"update_id": 1}])
    journal.mark_done([1], flush=False)
    journal.flush_soon(asyncio.get_running_loop())
    journal.flush_soon(asyncio.get_running_loop())  # one timer, not two
    assert _done_on_disk(path) == set()
    for _ in range(100):
        await asyncio.sleep(IDLE_FLUSH / 5)
        if _done_on_disk(path):
            break
    assert _done_on_disk(path) == {1}
    journal.close()


def test_a_mark_lost_in_a_crash_only_replays_its_update(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = UpdateJournal(path)
    journal.add([{"update_id": 7}, {"update_id": 8}])
    journal.mark_done([7])
    journal.mark_done([8], flush=False)  # the process dies before any flush
    after_crash = UpdateJournal(path)
    assert [u["update_id"] for u in after_crash.unfinished()] == [8]
    after_crash.close()
    journal._conn.close()  # type: ignore[union-attr]


def test_fetched_updates_are_journaled_as_telegram_sent_them(tmp_path: Path) -> None:
    """Each update's own slice of the getUpdates body goes to the journal, not a re-encoding of it."""
    body = (
        '{"ok":true,"result":[{"update_id":7,"message":{"text":"\\u51fa\\u51b0 ]},"}},\n'
        ' {"update_id":8,"edited_message":{"text":"加V"}}]}'
    ).encode()
    split = split_updates(body)
    assert split is not None
    payload, raws = split
    assert payload == json.loads(body)
    assert raws == [
        '{"update_id":7,"message":{"text":"\\u51fa\\u51b0 ]},"}}',
        '{"update_id":8,"edited_message":{"text":"加V"}}',
    ]
    journal = UpdateJournal(tmp_path / "journal.sqlite3")
    assert journal.add_encoded([(7, raws[0]), (8, raws[1])]) == {7, 8}
    assert journal.add_encoded([(8, raws[1])]) == set(), "a resent update is not new"
    assert journal.unfinished() == payload["result"]
    journal.close()


def test_other_bodies_are_not_split() -> None:
    """Anything but a successful result list is parsed the ordinary way (None here)."""
    assert split_updates(b'{"ok":true,"result":[]}') == ({"ok": True, "result": []}, [])
    for body in (
        b'{"ok":false,"error_code":409,"description":"Conflict"}',
        b'{"ok":true,"result":[1,2]}',
        b'{"ok":true,"result":[{"update_id":1}],"extra":1}',
        b'{"ok":true,"result":[{"update_id":1}',
        b"\xff",
    ):
        assert split_updates(body) is None, body
