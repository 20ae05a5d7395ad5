"""Payment attempts: a payment (the intent) is collected by one or more attempts at a channel.

Each attempt has its own status and provider reference and is written before the provider is called
(docs/architecture.md, "Channels"). `payments.attempt_id` names the attempt that currently carries the payment.
Payments made before this migration have no attempt rows: wallet payments never have one, and a channel payment
without one is treated as settled in-process (the sandbox), as it was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("attempt_id", sa.String(40), nullable=True))
    op.create_table(
        "payment_attempts",
        sa.Column("attempt_id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scene", sa.String(16), nullable=False),
        sa.Column("payer", sa.String(128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("trade_no", sa.String(64), nullable=False),
        sa.Column("failure_reason", sa.String(256), nullable=False),
        sa.Column("pay_url", sa.String(4096), nullable=False),
        sa.Column("qr_code", sa.String(1024), nullable=False),
        sa.Column("prepay_id", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_payment_attempts"),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.payment_id"], name="fk_payment_attempts_payment_id_payments"
        ),
        sa.CheckConstraint(
            "amount_minor >= 1 AND amount_minor <= 1000000000000000", name="ck_payment_attempts_amount_range"
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_payment_attempts_payment_id", "payment_attempts", ["payment_id"])
    op.create_index("ix_payment_attempts_status_next_check_at", "payment_attempts", ["status", "next_check_at"])


def downgrade() -> None:
    op.drop_table("payment_attempts")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("attempt_id")
