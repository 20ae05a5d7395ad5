"""The database schema: one MetaData for every table, mirrored by the Alembic migrations.

Money is BigInteger minor units. Every table that a caller-chosen key can address has a unique constraint on
it, because idempotency is data (docs/ledger.md): the constraint, not a lock, is what stops a double charge.
A unit test checks that the migrations produce exactly this schema.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)

from runtime.schema_base import BINARY_TEXT, ID_LENGTH, NAME_LENGTH, metadata

# The limits of workers/domain/limits.py as CHECK constraints (migration 0003). The service refuses anything beyond them
# first, with a clear status; these are the last line, so no bug can store a value later sums could overflow.
_AMOUNT = "amount_minor >= 1 AND amount_minor <= 1000000000000000"

# SQLite only auto-increments an INTEGER PRIMARY KEY; everywhere else the key is a 64-bit integer.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(NAME_LENGTH), primary_key=True),
    # The calling service; idempotency keys and order ids are scoped to it.
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("scopes", String(1024), nullable=False),
    # The secret sealed by the master key ring (runtime/master_key.py); the clear secret is never stored.
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # Limits of this key (migration 0011; docs/security.md, "Rate limits and quotas"); NULL: the stack default.
    Column("rate_per_s", Double, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("user_rate_per_s", Double, nullable=True),
    Column("user_burst", Integer, nullable=True),
    Column("max_concurrent_calls", Integer, nullable=True),
    # Rotation: the secret before the last `keys rotate` verifies too until it expires (docs/security.md,
    # "Key lifecycle"); the last call the gateways saw, written every few seconds, not per call.
    Column("previous_secret_ciphertext", LargeBinary, nullable=True),
    Column("previous_secret_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    **BINARY_TEXT,
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", AutoId, primary_key=True, autoincrement=True),
    # wallet | payable | revenue | clearing
    Column("kind", String(16), nullable=False),
    # The user id for wallets, the creator id for payables, the channel for clearing, "platform" for revenue.
    Column("subject", String(NAME_LENGTH), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("balance_minor", BigInteger, nullable=False, default=0),
    # Highest lock fencing token that has written this row; stale lock holders' writes match no row.
    Column("fence", BigInteger, nullable=False, default=0),
    # Wallets and payables must never go below zero; clearing and revenue accounts may.
    Column("non_negative", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "subject", "currency"),
    CheckConstraint(
        "balance_minor >= -4000000000000000000 AND balance_minor <= 4000000000000000000 "
        "AND (NOT non_negative OR (balance_minor >= 0 AND balance_minor <= 100000000000000000))",
        name="balance_range",
    ),
    **BINARY_TEXT,
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("entry_id", String(ID_LENGTH), primary_key=True),
    # top_up | purchase | refund | transfer | reversal
    Column("kind", String(16), nullable=False),
    Column("payment_id", String(ID_LENGTH), nullable=True, index=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # What the entry belongs to, as callers know it: a payment id, a refund id or a transfer id.
    Column("reference_id", String(NAME_LENGTH), nullable=True),
    **BINARY_TEXT,
)

postings = Table(
    "postings",
    metadata,
    # Monotonic per database: the order postings were written, used for "newest first" paging.
    Column("posting_id", AutoId, primary_key=True, autoincrement=True),
    Column("entry_id", String(ID_LENGTH), ForeignKey("journal_entries.entry_id"), nullable=False, index=True),
    Column("account_id", AutoId, ForeignKey("accounts.account_id"), nullable=False),
    # Signed: positive credits the account, negative debits it. Each entry's postings sum to zero per currency.
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "account_id", "posting_id"),
    CheckConstraint(
        "amount_minor <> 0 AND amount_minor >= -1000000000000000 AND amount_minor <= 1000000000000000",
        name="amount_range",
    ),
    **BINARY_TEXT,
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(ID_LENGTH), primary_key=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("order_id", String(NAME_LENGTH), nullable=False),
    # top_up | purchase
    Column("payment_type", String(16), nullable=False),
    Column("user_id", String(NAME_LENGTH), nullable=False),
    Column("payee_id", String(NAME_LENGTH), nullable=False, default=""),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(16), nullable=False),
    Column("status", String(24), nullable=False),
    Column("refunded_minor", BigInteger, nullable=False, default=0),
    Column("failure_reason", String(256), nullable=False, default=""),
    Column("description", String(256), nullable=False, default=""),
    Column("entry_id", String(ID_LENGTH), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Price breakdown (list price - discount + tax = amount) and purchase split (creator + platform = amount).
    Column("list_price_minor", BigInteger, nullable=False, server_default="0"),
    Column("discount_minor", BigInteger, nullable=False, server_default="0"),
    Column("tax_minor", BigInteger, nullable=False, server_default="0"),
    Column("creator_amount_minor", BigInteger, nullable=False, server_default="0"),
    Column("platform_fee_minor", BigInteger, nullable=False, server_default="0"),
    # The attempt that currently carries the payment at its channel (payment_attempts); NULL for wallet payments.
    Column("attempt_id", String(ID_LENGTH), nullable=True),
    # What the risk engine decided about a payment it held for review (docs/risk.md); "" for every other payment.
    Column("risk_decision", String(8), nullable=False, server_default=""),
    Column("risk_score", String(16), nullable=False, server_default=""),
    Column("risk_reasons", String(2048), nullable=False, server_default=""),
    UniqueConstraint("owner", "order_id"),
    # The expiry sweeper's oldest PENDING payments, without reading every payment (migration 0008).
    Index(None, "status", "created_at"),
    CheckConstraint(_AMOUNT, name="amount_range"),
    CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refunded_range"),
    CheckConstraint(
        "list_price_minor >= 0 AND list_price_minor <= 1000000000000000 AND discount_minor >= 0 "
        "AND discount_minor <= list_price_minor AND tax_minor >= 0 AND tax_minor <= 1000000000000000",
        name="price_range",
    ),
    CheckConstraint(
        "creator_amount_minor >= 0 AND platform_fee_minor >= 0 "
        "AND creator_amount_minor + platform_fee_minor <= amount_minor",
        name="split_range",
    ),
    **BINARY_TEXT,
)

# One try at one channel to collect a payment (docs/architecture.md, "Channels"). Written before the provider is
# called, so a crash at any point leaves a row the janitor resolves by querying the provider. The provider knows
# it by `attempt_id` (sent as out_trade_no / orderId / reference).
payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("attempt_id", String(ID_LENGTH), primary_key=True),
    Column("payment_id", String(ID_LENGTH), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("method", String(16), nullable=False),
    # created | pending | unknown | succeeded | failed | closed
    Column("status", String(16), nullable=False),
    Column("scene", String(16), nullable=False),
    # The card token or WeChat openid the provider needs again if the create must be repeated after a crash.
    Column("payer", String(NAME_LENGTH * 2), nullable=False, default=""),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # The provider's own reference (Alipay trade_no, WeChat transaction_id, UnionPay queryId, card authorization).
    Column("trade_no", String(NAME_LENGTH), nullable=False, default=""),
    Column("failure_reason", String(256), nullable=False, default=""),
    # What the payer needs, as the provider handed it back.
    Column("pay_url", String(4096), nullable=False, default=""),
    Column("qr_code", String(1024), nullable=False, default=""),
    Column("prepay_id", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # A card from the vault: "**** 4242" (migration 0014); "" otherwise.
    Column("card_masked", String(16), nullable=False, default="", server_default=""),
    # When the janitor next asks the provider about an unsettled attempt, and how often it has asked.
    Column("next_check_at", DateTime(timezone=True), nullable=True),
    Column("checks", Integer, nullable=False, default=0),
    Index(None, "status", "next_check_at"),
    CheckConstraint(_AMOUNT, name="amount_range"),
    **BINARY_TEXT,
)

# Every provider callback as it arrived, stored before anything else is done with it (docs/channels.md,
# "Notifications"): forged and mismatched ones are kept for review, and an operator can replay any of them.
channel_notifications = Table(
    "channel_notifications",
    metadata,
    Column("notification_id", AutoId, primary_key=True, autoincrement=True),
    Column("channel", String(16), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The request as received: its headers (JSON object, names in lower case) and its body, byte for byte.
    Column("headers", LargeBinary, nullable=False),
    Column("body", LargeBinary, nullable=False),
    # received | applied | duplicate | rejected
    Column("verdict", String(16), nullable=False),
    Column("reason", String(64), nullable=False, default=""),
    Column("attempt_id", String(ID_LENGTH), nullable=True),
    Column("processed_at", DateTime(timezone=True), nullable=True),
    Index(None, "verdict", "received_at"),
    **BINARY_TEXT,
)

refunds = Table(
    "refunds",
    metadata,
    Column("record_id", AutoId, primary_key=True, autoincrement=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("refund_id", String(NAME_LENGTH), nullable=False),
    Column("payment_id", String(ID_LENGTH), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("creator_amount_minor", BigInteger, nullable=False),
    Column("platform_fee_minor", BigInteger, nullable=False),
    Column("reason", String(256), nullable=False),
    Column("entry_id", String(ID_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Through a provider (docs/channels.md, "Refunds"): PENDING until the provider confirms it; our refund number
    # at the provider (letters and digits, as every provider accepts), its own reference, why it failed.
    Column("status", String(16), nullable=False, server_default="succeeded"),
    Column("out_refund_no", String(ID_LENGTH), nullable=True, unique=True),
    Column("channel_refund_no", String(NAME_LENGTH), nullable=False, server_default=""),
    Column("failure_reason", String(256), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    Column("next_check_at", DateTime(timezone=True), nullable=True),
    Column("checks", Integer, nullable=False, server_default="0"),
    UniqueConstraint("owner", "refund_id"),
    CheckConstraint(_AMOUNT, name="amount_range"),
    **BINARY_TEXT,
)

transfers = Table(
    "transfers",
    metadata,
    Column("record_id", AutoId, primary_key=True, autoincrement=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    Column("transfer_id", String(NAME_LENGTH), nullable=False),
    Column("from_user_id", String(NAME_LENGTH), nullable=False),
    Column("to_user_id", String(NAME_LENGTH), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("entry_id", String(ID_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("owner", "transfer_id"),
    CheckConstraint(_AMOUNT, name="amount_range"),
    **BINARY_TEXT,
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("record_id", AutoId, primary_key=True, autoincrement=True),
    Column("owner", String(NAME_LENGTH), nullable=False),
    # The namespace of the key: "order" (TopUp, CreatePayment), later "refund", "transfer".
    Column("scope", String(16), nullable=False),
    Column("idempotency_key", String(NAME_LENGTH), nullable=False),
    # sha256 over the operation name and the canonical request; a different request under the same key is refused.
    Column("request_hash", String(64), nullable=False),
    Column("resource_id", String(ID_LENGTH), nullable=False),
    # The serialized original response, returned verbatim to a repeated call.
    Column("response", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("owner", "scope", "idempotency_key"),
    **BINARY_TEXT,
)

__all__ = [
    "ID_LENGTH",
    "NAME_LENGTH",
    "accounts",
    "api_keys",
    "channel_notifications",
    "idempotency_records",
    "journal_entries",
    "metadata",
    "payment_attempts",
    "payments",
    "postings",
    "refunds",
    "transfers",
]

# -- reconciliation (docs/reconciliation.md) -------------------------------------------------------------------
# One row per `paygate reconcile` of one channel and one provider day, and one row per difference it found. Items
# are never edited except to record their resolution: a correction is a journal entry (correction_entry_id), and
# the guarded update that names it (WHERE resolved_at IS NULL) is what stops an item being corrected twice.
reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("run_id", String(ID_LENGTH), primary_key=True),
    Column("channel", String(16), nullable=False),
    # The provider's calendar day (Asia/Shanghai, or UTC for card) as YYYY-MM-DD, which sorts and compares as a date.
    Column("day", String(10), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("lines", Integer, nullable=False),  # statement lines read
    Column("matched", Integer, nullable=False),  # statement references that agree with ours
    Column("unmatched", Integer, nullable=False),  # items below
    Index(None, "channel", "day"),
    **BINARY_TEXT,
)

reconciliation_items = Table(
    "reconciliation_items",
    metadata,
    Column("item_id", String(ID_LENGTH), primary_key=True),
    Column("run_id", String(ID_LENGTH), ForeignKey("reconciliation_runs.run_id"), nullable=False, index=True),
    # missing_locally | missing_at_channel | amount_differs | status_differs | duplicate_at_channel
    Column("kind", String(24), nullable=False),
    Column("record", String(8), nullable=False),  # payment | refund
    Column("out_trade_no", String(NAME_LENGTH), nullable=False),  # our attempt id, as the provider knows it
    Column("out_refund_no", String(NAME_LENGTH), nullable=False),  # our refund number at the provider; "" for payments
    Column("currency", String(3), nullable=False),
    # What each side counts as settled; NULL when that side has no settled record of it.
    Column("ours_minor", BigInteger, nullable=True),
    Column("theirs_minor", BigInteger, nullable=True),
    Column("detail", String(256), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("correction_entry_id", String(ID_LENGTH), nullable=True),
    Column("resolution", String(256), nullable=False),  # the operator's --reason
    **BINARY_TEXT,
)

__all__ += ["reconciliation_items", "reconciliation_runs"]

# The outbox and webhook tables live in their own module, on the same MetaData (this one grew past the size limit).
from runtime.schema_events import event_sequence, events, webhook_dead_letters, webhook_endpoints  # noqa: E402

__all__ += ["event_sequence", "events", "webhook_dead_letters", "webhook_endpoints"]

# The audit trail (docs/audit.md): operator data, on the same MetaData.
from runtime.schema_audit import audit_head, audit_log  # noqa: E402

__all__ += ["audit_head", "audit_log"]

# The card vault (docs/security.md, "Card and personal data").
from runtime.schema_vault import card_tokens  # noqa: E402

__all__ += ["card_tokens"]
