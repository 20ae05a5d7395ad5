"""Refunds, transfers, price breakdown and purchase split on payments, entry references.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYMENT_COLUMNS = ("list_price_minor", "discount_minor", "tax_minor", "creator_amount_minor", "platform_fee_minor")


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for name in PAYMENT_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("journal_entries") as batch:
        batch.add_column(sa.Column("reference_id", sa.String(64), nullable=True))
    op.create_table(
        "refunds",
        sa.Column("record_id", AutoId, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("creator_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("platform_fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_refunds"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.payment_id"], name="fk_refunds_payment_id_payments"),
        sa.UniqueConstraint("owner", "refund_id", name="uq_refunds_owner_refund_id"),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    op.create_table(
        "transfers",
        sa.Column("record_id", AutoId, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("transfer_id", sa.String(64), nullable=False),
        sa.Column("from_user_id", sa.String(64), nullable=False),
        sa.Column("to_user_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_transfers"),
        sa.UniqueConstraint("owner", "transfer_id", name="uq_transfers_owner_transfer_id"),
    )


def downgrade() -> None:
    op.drop_table("transfers")
    op.drop_table("refunds")
    with op.batch_alter_table("journal_entries") as batch:
        batch.drop_column("reference_id")
    with op.batch_alter_table("payments") as batch:
        for name in PAYMENT_COLUMNS:
            batch.drop_column(name)
