"""Webhook endpoints and dead letters as records, and what a management call asks for once decoded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewWebhookEndpoint:
    url: str
    types: frozenset[str]  # EventType names; empty for every type


@dataclass(frozen=True)
class WebhookEndpointRef:
    endpoint_id: str
    overlap_hours: int = 24  # RotateWebhookEndpointSecret only


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    owner: str
    url: str
    types: frozenset[str]  # empty: every type
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None
    previous_expires_at: datetime | None
    created_at: datetime
    cursor_seq: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    endpoint_id: str
    owner: str
    event_id: str
    attempts: int
    last_error: str
    created_at: datetime
    redelivered_at: datetime | None
