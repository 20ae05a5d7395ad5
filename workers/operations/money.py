"""Which accounts a payment's money moves between (docs/ledger.md, "Accounts")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from workers.domain.pricing import split_fee
from workers.domain.types import PLATFORM_SUBJECT, AccountKind, PaymentRecord, PaymentType
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, balance_limit_exceeded


def split(amount_minor: int, payee_id: str, platform_fee_bps: int) -> tuple[int, int]:
    """(creator's share, platform's fee); all to the platform when there is no creator."""
    if not payee_id:
        return 0, amount_minor
    return split_fee(amount_minor, platform_fee_bps)


def purchase_credits(
    connection: Connection, payee_id: str, creator_minor: int, fee_minor: int, currency: str, now: datetime
) -> list[BalanceChange]:
    """The creator's share and the platform's fee."""
    revenue = accounts.ensure_account(connection, AccountKind.REVENUE, PLATFORM_SUBJECT, currency, now)
    changes = [BalanceChange(revenue, fee_minor)]
    if payee_id:
        payable = accounts.ensure_account(connection, AccountKind.PAYABLE, payee_id, currency, now)
        changes.append(BalanceChange(payable, creator_minor))
    return changes


def money_in(connection: Connection, payment: PaymentRecord, now: datetime) -> list[BalanceChange]:
    """Channel money arriving: its clearing account pays the wallet (top-up) or the creator and platform."""
    clearing = accounts.ensure_account(connection, AccountKind.CLEARING, payment.method.value, payment.currency, now)
    changes = [BalanceChange(clearing, -payment.amount_minor)]
    if payment.payment_type is PaymentType.TOP_UP:
        wallet = accounts.ensure_account(connection, AccountKind.WALLET, payment.user_id, payment.currency, now)
        changes.append(BalanceChange(wallet, payment.amount_minor))
    else:
        changes.extend(
            purchase_credits(
                connection,
                payment.payee_id,
                payment.creator_amount_minor,
                payment.platform_fee_minor,
                payment.currency,
                now,
            )
        )
    return changes


def check_room(connection: Connection, payment: PaymentRecord) -> None:
    """Refuse, before any provider is asked for money, a payment whose credits would take an account past its
    ceiling (docs/api.md, "Limits"). Read-only: the credits themselves are bounded again when they are applied."""
    if payment.payment_type is PaymentType.TOP_UP:
        credits = [(AccountKind.WALLET, payment.user_id, payment.amount_minor)]
    else:
        credits = [(AccountKind.REVENUE, PLATFORM_SUBJECT, payment.platform_fee_minor)]
        if payment.payee_id:
            credits.append((AccountKind.PAYABLE, payment.payee_id, payment.creator_amount_minor))
    for kind, subject, amount_minor in credits:
        account = accounts.find_account(connection, kind, subject, payment.currency)
        if account is not None and account.balance_minor + amount_minor > kind.balance_range[1]:
            raise balance_limit_exceeded(account, amount_minor)
