"""Paygate card tokens on the payment path (docs/security.md, "Card and personal data"): the masked card a
payment shows, checked against the caller's own vault at the start; the card itself, decrypted only to build the
processor's request."""

from __future__ import annotations

from workers.channels.base import PaymentCard
from workers.domain.types import AttemptRecord, Caller
from workers.operations.context import Context
from workers.vault.cards import TOKEN_PREFIX as VAULT_TOKEN_PREFIX
from workers.vault.cards import card_not_found


def masked_card(ctx: Context, caller: Caller, card_token: str) -> str:
    """The masked card ("**** 4242") of a Paygate card token; "" for a processor token or none."""
    if not card_token.startswith(VAULT_TOKEN_PREFIX):
        return ""
    found = ctx.vault.find(caller.owner, card_token) if ctx.vault is not None else None
    if found is None:
        raise card_not_found()
    return found.masked


def revealed_card(ctx: Context, attempt: AttemptRecord) -> PaymentCard | None:
    if ctx.vault is None or not attempt.payer.startswith(VAULT_TOKEN_PREFIX):
        return None
    card = ctx.vault.reveal(attempt.owner, attempt.payer)
    return PaymentCard(card.number, card.exp_month, card.exp_year)
