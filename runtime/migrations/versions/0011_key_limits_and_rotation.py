"""API keys: limits per key, the previous secret during a rotation's grace, the last-used time
(docs/security.md, "Rate limits and quotas" and "Key lifecycle").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("rate_per_s", sa.Double()),
    ("burst", sa.Integer()),
    ("user_rate_per_s", sa.Double()),
    ("user_burst", sa.Integer()),
    ("max_concurrent_calls", sa.Integer()),
    ("previous_secret_ciphertext", sa.LargeBinary()),
    ("previous_secret_expires_at", sa.DateTime(timezone=True)),
    ("last_used_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # batch: SQLite cannot drop columns in place (downgrade), and one batch keeps the table rebuilt once.
    with op.batch_alter_table("api_keys") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
