"""What the risk engine decided about a payment it held for review (docs/risk.md): its decision, combined risk
and the names of the rules that fired. Empty for every other payment.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = (("risk_decision", 8), ("risk_score", 16), ("risk_reasons", 2048))


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for name, _length in reversed(COLUMNS):
            batch.drop_column(name)
