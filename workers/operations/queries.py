"""GetPayment, GetBalance, ListTransactions: reads, every one scoped by the caller's owner."""

from __future__ import annotations

from runtime.errors import FieldViolation, InvalidArgument
from workers.codec.decode import PAGE_TOKEN_RULE
from workers.domain.types import (
    AccountKind,
    BalanceQuery,
    Caller,
    PaymentLookup,
    PaymentRecord,
    TransactionsPage,
    TransactionsQuery,
)
from workers.ledger import accounts
from workers.operations.context import Context, payment_not_found
from workers.store import records

NEWEST = 2**62  # "before" bound of the first page


def get_payment(ctx: Context, caller: Caller, lookup: PaymentLookup) -> PaymentRecord:
    """A payment of the caller's owner. Another owner's payment is answered exactly like a missing one."""
    with ctx.db.read() as connection:
        if lookup.payment_id:
            found = records.payment_by_id(connection, caller.owner, lookup.payment_id)
        else:
            found = records.payment_by_order(connection, caller.owner, lookup.order_id)
    if found is None:
        raise payment_not_found("order_id" if lookup.order_id else "payment_id")
    return found


def get_balance(ctx: Context, query: BalanceQuery) -> int:
    reader = ctx.db.point_reader  # SQLite: without the engine (runtime/point_reads.py)
    if reader is not None:
        account = accounts.point_read_account(reader, AccountKind.WALLET, query.user_id, query.currency)
    else:
        with ctx.db.read() as connection:
            account = accounts.find_account(connection, AccountKind.WALLET, query.user_id, query.currency)
    return 0 if account is None else account.balance_minor


def list_transactions(ctx: Context, caller: Caller, query: TransactionsQuery) -> TransactionsPage:
    """The caller's own postings to the user's wallets, newest first. The cursor is a posting id inside a signed
    page token (workers/codec/page_tokens.py) bound to the owner and the user, so entries written while a caller
    pages (all newer, higher ids) never shift or repeat the pages still to come."""
    before = NEWEST
    if query.page_token:
        cursor = ctx.page_tokens.read(caller.owner, query.user_id, query.page_token)
        if cursor is None:
            raise InvalidArgument([FieldViolation("page_token", PAGE_TOKEN_RULE)])
        before = cursor
    with ctx.db.read() as connection:
        rows = records.wallet_postings(
            connection, caller.owner, query.user_id, before_posting_id=before, limit=query.page_size + 1
        )
    page = rows[: query.page_size]
    more = len(rows) > query.page_size and bool(page)
    token = ctx.page_tokens.issue(caller.owner, query.user_id, page[-1].posting_id) if more else ""
    return TransactionsPage(page, token)
