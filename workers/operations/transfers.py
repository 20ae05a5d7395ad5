"""Transfer: wallet to wallet, both locked in canonical order (docs/ledger.md)."""

from __future__ import annotations

from workers.domain.types import AccountKind, Caller, TransferCommand, TransferRecord, request_hash
from workers.execution.idempotency import Claim
from workers.ledger import accounts
from workers.ledger.movement import BalanceChange, Entry, move
from workers.operations.context import TRANSFER_SCOPE, Context, insufficient, lock_resource
from workers.store import records


def transfer(ctx: Context, caller: Caller, command: TransferCommand) -> TransferRecord:
    return ctx.executor.run(
        caller,
        TRANSFER_SCOPE,
        command.transfer_id,
        request_hash(command),
        lambda claim: _transfer_once(ctx, caller, command, claim),
        lambda _claim, stored: TransferRecord.from_json(stored),
    )


def _transfer_once(ctx: Context, caller: Caller, command: TransferCommand, claim: Claim) -> TransferRecord:
    with ctx.db.read() as connection:
        source = accounts.find_account(connection, AccountKind.WALLET, command.from_user_id, command.currency)
    if source is None or source.balance_minor < command.amount_minor:
        raise insufficient(command.from_user_id, command.amount_minor, command.currency, source)
    source_lock = lock_resource(AccountKind.WALLET, command.from_user_id, command.currency)
    target_lock = lock_resource(AccountKind.WALLET, command.to_user_id, command.currency)
    # Both wallets, in canonical order: two opposite transfers between the same users cannot deadlock.
    with ctx.executor.leases(source_lock, target_lock) as leases:
        now = ctx.clock()
        with ctx.db.write() as connection:
            target = accounts.ensure_account(connection, AccountKind.WALLET, command.to_user_id, command.currency, now)
            changes = [
                BalanceChange(source, -command.amount_minor, leases[source_lock]),
                BalanceChange(target, command.amount_minor),
            ]
            entry = Entry(
                kind="transfer",
                owner=caller.owner,
                payment_id=None,
                reference_id=command.transfer_id,
                currency=command.currency,
                now=now,
                on_insufficient=lambda: insufficient(
                    command.from_user_id, command.amount_minor, command.currency, None
                ),
            )
            with move(connection, changes, entry) as entry_id:
                record = TransferRecord(
                    transfer_id=command.transfer_id,
                    from_user_id=command.from_user_id,
                    to_user_id=command.to_user_id,
                    amount_minor=command.amount_minor,
                    currency=command.currency,
                    entry_id=entry_id,
                    created_at=now,
                )
                records.insert_transfer(connection, caller.owner, record)
                ctx.executor.idempotency.record(connection, claim, command.transfer_id, record.to_json(), now)
    return record
