"""TokenizeCard as an entry of the worker's method table (workers/server.py): request type, decode, and the work
that runs on the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from paygate.v1 import payment_gateway_pb2 as pb
from workers.codec import decode, encode
from workers.domain.types import Caller
from workers.vault.cards import CardVault, NewCard

Entry = tuple[type[Message], Callable[[Any], Any], Callable[[Caller, Any], Message]]


def methods(vault: CardVault) -> dict[str, Entry]:
    def tokenize(caller: Caller, card: NewCard) -> Message:
        return encode.card_token(vault.tokenize(caller.owner, card))

    return {"TokenizeCard": (pb.TokenizeCardRequest, decode.tokenize_card, tokenize)}
