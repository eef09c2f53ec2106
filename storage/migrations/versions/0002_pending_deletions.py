"""pending deletions: bot messages (deletion notices) to remove at a time, kept across restarts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 03:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_deletions",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("delete_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "message_id", name=op.f("pk_pending_deletions")),
    )
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.create_index("ix_pending_deletions_delete_at", ["delete_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_deletions_delete_at")
    op.drop_table("pending_deletions")
