"""Reconciliation: the runs of `paygate reconcile` and the differences each found (docs/reconciliation.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("unmatched", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_reconciliation_runs"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_reconciliation_runs_channel_day", "reconciliation_runs", ["channel", "day"])
    op.create_table(
        "reconciliation_items",
        sa.Column("item_id", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("record", sa.String(8), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("out_refund_no", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("ours_minor", sa.BigInteger(), nullable=True),
        sa.Column("theirs_minor", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(256), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("correction_entry_id", sa.String(40), nullable=True),
        sa.Column("resolution", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("item_id", name="pk_reconciliation_items"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["reconciliation_runs.run_id"], name="fk_reconciliation_items_run_id_reconciliation_runs"
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_reconciliation_items_run_id", "reconciliation_items", ["run_id"])


def downgrade() -> None:
    op.drop_table("reconciliation_items")
    op.drop_table("reconciliation_runs")
