"""The card vault, and the masked card of an attempt paid with a vault token (docs/security.md, "Card and
personal data").

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_tokens",
        sa.Column("token", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("brand", sa.String(16), nullable=False),
        sa.Column("exp_month", sa.SmallInteger(), nullable=False),
        sa.Column("exp_year", sa.SmallInteger(), nullable=False),
        sa.Column("data_key_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("card_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_card_tokens"),
        sa.UniqueConstraint("owner", "fingerprint", name="uq_card_tokens_owner_fingerprint"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("payment_attempts") as batch:
        batch.add_column(sa.Column("card_masked", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("payment_attempts") as batch:
        batch.drop_column("card_masked")
    op.drop_table("card_tokens")
