"""Refunds through a provider: a status (PENDING until the provider confirms), our refund number at the provider,
the provider's reference, a failure reason, and the janitor's schedule (docs/channels.md, "Refunds").

Existing refunds were all applied at once: they are SUCCEEDED.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="succeeded"))
        batch.add_column(sa.Column("out_refund_no", sa.String(40), nullable=True))
        batch.add_column(sa.Column("channel_refund_no", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("failure_reason", sa.String(256), nullable=False, server_default=""))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("checks", sa.Integer(), nullable=False, server_default="0"))
        batch.create_unique_constraint("uq_refunds_out_refund_no", ["out_refund_no"])


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_constraint("uq_refunds_out_refund_no", type_="unique")
        for name in ("checks", "next_check_at", "updated_at", "failure_reason", "channel_refund_no", "out_refund_no"):
            batch.drop_column(name)
        batch.drop_column("status")
