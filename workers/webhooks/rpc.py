"""The webhook-management RPCs (docs/events.md, "Webhooks") as entries of the worker's method table
(workers/server.py): request type, decode, and the work that runs on the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from paygate.v1 import payment_gateway_pb2 as pb
from runtime import audit
from workers.codec import decode, encode
from workers.domain.types import Caller
from workers.domain.webhooks import NewWebhookEndpoint, WebhookEndpointRef
from workers.operations.context import utc_now
from workers.webhooks.endpoints import Endpoints


def _actor(caller: Caller) -> str:
    """Who is changing an endpoint, for the audit trail (runtime/audit.py)."""
    return audit.key_actor(caller.key_id) if caller.key_id else audit.SYSTEM


Entry = tuple[type[Message], Callable[[Any], Any], Callable[[Caller, Any], Message]]


def methods(endpoints: Endpoints) -> dict[str, Entry]:
    def create(caller: Caller, new: NewWebhookEndpoint) -> Message:
        made = endpoints.add(caller.owner, new.url, sorted(new.types), utc_now(), actor=_actor(caller))
        return encode.webhook_endpoint(made.endpoint, made.secret)

    def listing(caller: Caller, _: None) -> Message:
        return encode.webhook_endpoints(endpoints.of_owner(caller.owner))

    def delete(caller: Caller, ref: WebhookEndpointRef) -> Message:
        removed = endpoints.remove(caller.owner, ref.endpoint_id, utc_now(), actor=_actor(caller))
        return encode.webhook_endpoint(removed)

    def rotate(caller: Caller, ref: WebhookEndpointRef) -> Message:
        overlap = timedelta(hours=ref.overlap_hours)
        made = endpoints.rotate(caller.owner, ref.endpoint_id, utc_now(), overlap, actor=_actor(caller))
        return encode.webhook_endpoint(made.endpoint, made.secret)

    return {
        "CreateWebhookEndpoint": (pb.CreateWebhookEndpointRequest, decode.create_webhook_endpoint, create),
        "ListWebhookEndpoints": (pb.ListWebhookEndpointsRequest, decode.list_webhook_endpoints, listing),
        "DeleteWebhookEndpoint": (pb.DeleteWebhookEndpointRequest, decode.webhook_endpoint_ref, delete),
        "RotateWebhookEndpointSecret": (pb.RotateWebhookEndpointSecretRequest, decode.rotate_webhook_secret, rotate),
    }
