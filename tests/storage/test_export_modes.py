"""Export and report-batch files hold solicitation texts and senders' ids: owner-only (0600) from the
moment they exist, whatever the umask, and never left half-written."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import record_many

import storage
import storage.export


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: a file opened without an explicit mode would come out 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A folder of its own for the files (the test database lives in tmp_path)."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
async def test_export_is_owner_only_while_written_and_after(
    db: storage.Database, out_dir: Path, fmt: str, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    await record_many(db, 3)
    real_blocks = storage.export.iter_export_blocks
    seen: dict[str, int] = {}

    async def watched_blocks(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # Look at the directory while the file is being written: whatever exists must be 0600 already.
        async for block in real_blocks(*args, **kwargs):
            seen.update({p.name: mode(p) for p in out_dir.iterdir()})
            yield block

    monkeypatch.setattr(storage.export, "iter_export_blocks", watched_blocks)
    out = out_dir / f"export.{fmt}"
    result = await storage.export_records(db.engine, path=out, fmt=fmt)
    assert result.incidents == 3
    assert seen and set(seen.values()) == {0o600}, seen
    assert mode(out) == 0o600
    assert [p.name for p in out_dir.iterdir()] == [out.name]  # no scratch file left behind
    assert storage.verify_export(out).ok


async def test_export_over_an_older_world_readable_file_leaves_it_owner_only(
    db: storage.Database, out_dir: Path, open_umask: None
) -> None:
    await record_many(db, 2)
    out = out_dir / "export.jsonl"
    out.write_text("old\n")
    out.chmod(0o644)
    await storage.export_records(db.engine, path=out, fmt="jsonl")
    assert mode(out) == 0o600
    assert len(list(storage.read_export(out))) == 2


async def test_a_failed_export_leaves_no_file(
    db: storage.Database, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await record_many(db, 2)

    async def broken_blocks(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("database went away")
        yield  # an async generator

    monkeypatch.setattr(storage.export, "iter_export_blocks", broken_blocks)
    with pytest.raises(RuntimeError, match="went away"):
        await storage.export_records(db.engine, path=out_dir / "export.csv", fmt="csv")
    assert list(out_dir.iterdir()) == []


async def test_report_batch_file_is_owner_only(db: storage.Database, out_dir: Path, open_umask: None) -> None:
    ids = await record_many(db, 2)
    async with db.sessionmaker.begin() as s:
        for i in ids:
            await storage.append_event(session=s, incident_id=i, kind="report", value="queued", actor="model")
    async with db.sessionmaker.begin() as s:
        batch = await storage.create_report_batch(
            session=s, chat_id=None, created_by="test", path=out_dir / "batch.xlsx", fmt="xlsx"
        )
    assert batch is not None
    assert mode(out_dir / "batch.xlsx") == 0o600
    assert [p.name for p in out_dir.iterdir()] == ["batch.xlsx"]
