"""Limits in the schema (CHECK constraints mirroring workers/domain/limits.py) and case-sensitive identifiers on MySQL.

- Every amount is within the per-call ceiling (10^15 minor units), every balance within its range: wallets and
  creator payables (non_negative) in [0, 10^17], every account in [-4 x 10^18, 4 x 10^18]. The service checks the
  same limits first and refuses with a clear status; these constraints are the last line, so that no bug can store
  a value that later sums could overflow.
- MySQL/MariaDB compare text case-insensitively by default (utf8mb4_general_ci), which would make "Learner-1"
  and "learner-1" one wallet and one idempotency key. Identifiers are case-sensitive (docs/api.md), so every
  table is converted to the binary collation utf8mb4_bin. SQLite and PostgreSQL already compare bytes.

The numbers are written out here on purpose: a migration must not change when the code's constants do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = (
    "api_keys",
    "accounts",
    "journal_entries",
    "postings",
    "payments",
    "refunds",
    "transfers",
    "idempotency_records",
)
CHECKS = {
    "accounts": {
        "balance_range": "balance_minor >= -4000000000000000000 AND balance_minor <= 4000000000000000000 "
        "AND (NOT non_negative OR (balance_minor >= 0 AND balance_minor <= 100000000000000000))",
    },
    "postings": {
        "amount_range": "amount_minor <> 0 AND amount_minor >= -1000000000000000 AND amount_minor <= 1000000000000000",
    },
    "payments": {
        "amount_range": "amount_minor >= 1 AND amount_minor <= 1000000000000000",
        "refunded_range": "refunded_minor >= 0 AND refunded_minor <= amount_minor",
        "price_range": "list_price_minor >= 0 AND list_price_minor <= 1000000000000000 AND discount_minor >= 0 "
        "AND discount_minor <= list_price_minor AND tax_minor >= 0 AND tax_minor <= 1000000000000000",
        "split_range": "creator_amount_minor >= 0 AND platform_fee_minor >= 0 "
        "AND creator_amount_minor + platform_fee_minor <= amount_minor",
    },
    "refunds": {"amount_range": "amount_minor >= 1 AND amount_minor <= 1000000000000000"},
    "transfers": {"amount_range": "amount_minor >= 1 AND amount_minor <= 1000000000000000"},
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        _convert_tables("utf8mb4_bin")
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, condition in checks.items():
                batch.create_check_constraint(op.f(f"ck_{table}_{name}"), condition)


def downgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name in checks:
                batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
    if op.get_bind().dialect.name == "mysql":
        _convert_tables("utf8mb4_general_ci")


# The foreign keys between text columns: MariaDB refuses to change the collation of either end while one exists,
# even with FOREIGN_KEY_CHECKS = 0, so they are dropped around the conversion and made again (same definitions).
TEXT_FOREIGN_KEYS = (
    ("fk_postings_entry_id_journal_entries", "postings", "journal_entries", "entry_id", "entry_id"),
    ("fk_refunds_payment_id_payments", "refunds", "payments", "payment_id", "payment_id"),
)


def _convert_tables(collation: str) -> None:
    for name, source, _, _, _ in TEXT_FOREIGN_KEYS:
        op.drop_constraint(name, source, type_="foreignkey")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")
    for name, source, referent, local, remote in TEXT_FOREIGN_KEYS:
        op.create_foreign_key(name, source, referent, [local], [remote])
