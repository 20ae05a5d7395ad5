"""An index on payments (status, created_at): the expiry sweeper asks for the oldest PENDING payments every few
seconds (docs/channels.md, "Expiry"), which without it reads and sorts every payment ever made.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_status_created_at", "payments", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_status_created_at", table_name="payments")
