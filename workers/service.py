"""The operations of a worker behind one object, as the servicer, the CLI and the integration tests call them.

Each method is one line into workers/operations/: the logic lives there, one module per operation, over the
shared execution layer (workers/execution/) and the ledger (workers/ledger/). This class holds no state of its
own beyond the operations' context.
"""

from __future__ import annotations

import asyncio

from workers.domain.types import (
    BalanceQuery,
    Caller,
    CreatePaymentCommand,
    PaymentLookup,
    PaymentRecord,
    RefundCommand,
    RefundRecord,
    TopUpCommand,
    TransactionsPage,
    TransactionsQuery,
    TransferCommand,
    TransferRecord,
)
from workers.execution.locks import FencedLocks
from workers.operations import confirmation, expiry, janitor, payments, queries, refunds, risk_review, transfers
from workers.operations.context import Context
from workers.vault.cards import CardVault


class PaymentService:
    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def locks(self) -> FencedLocks:
        return self.context.executor.locks

    @property
    def vault(self) -> CardVault | None:
        return self.context.vault

    def close(self) -> None:
        """Stop background helpers (the group committer, the in-flight guard renewer); the worker calls this when
        it stops, after its server has drained."""
        if self.context.purchases is not None:
            self.context.purchases.close()
        self.context.executor.idempotency.close()
        self.context.channels.close()

    def top_up(self, caller: Caller, command: TopUpCommand) -> PaymentRecord:
        return payments.top_up(self.context, caller, command)

    def create_payment(self, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
        return payments.create_payment(self.context, caller, command)

    def submit_wallet_purchase(self, caller: Caller, command: CreatePaymentCommand) -> asyncio.Future[object] | None:
        return payments.submit_wallet_purchase(self.context, caller, command)

    def wallet_purchase_one_at_a_time(self, caller: Caller, command: CreatePaymentCommand) -> PaymentRecord:
        return payments.wallet_purchase_one_at_a_time(self.context, caller, command)

    def get_payment(self, caller: Caller, lookup: PaymentLookup) -> PaymentRecord:
        return queries.get_payment(self.context, caller, lookup)

    def get_balance(self, query: BalanceQuery) -> int:
        return queries.get_balance(self.context, query)

    def list_transactions(self, caller: Caller, query: TransactionsQuery) -> TransactionsPage:
        return queries.list_transactions(self.context, caller, query)

    def refund_payment(self, caller: Caller, command: RefundCommand) -> RefundRecord:
        return refunds.refund_payment(self.context, caller, command)

    def transfer(self, caller: Caller, command: TransferCommand) -> TransferRecord:
        return transfers.transfer(self.context, caller, command)

    def confirm_payment(self, payment_id: str) -> PaymentRecord:
        return confirmation.confirm_payment(self.context, payment_id)

    def sweep_once(self, ttl_s: int) -> int:
        return expiry.sweep_once(self.context, ttl_s)

    def close_expired(self, ttl_s: int, limit: int = expiry.MAX_PER_ROUND) -> int:
        return expiry.close_expired(self.context, ttl_s, limit)

    def check_attempts(self, backoff: janitor.Backoff) -> int:
        return janitor.run_once(self.context, backoff)

    def payments_in_review(self, limit: int = risk_review.MAX_LISTED) -> list[PaymentRecord]:
        return risk_review.in_review(self.context, limit)

    def release_review(self, payment_id: str, reason: str, actor: str) -> PaymentRecord:
        return risk_review.release(self.context, payment_id, reason, actor)

    def refuse_review(self, payment_id: str, reason: str, actor: str) -> PaymentRecord:
        return risk_review.refuse(self.context, payment_id, reason, actor)
