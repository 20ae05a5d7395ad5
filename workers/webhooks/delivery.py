"""One webhook delivery (docs/events.md, "Webhooks"): the event as proto3 JSON, signed, POSTed with httpx.

A delivery succeeds when the receiver answers 2xx within the timeouts; anything else — another status, a
redirect (never followed: the endpoint's URL is the one it registered), a timeout, a refused connection — is a
failure that the relay retries on its schedule. The receiver's body is never read beyond a small prefix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
from google.protobuf import json_format

from paygate.v1 import payment_gateway_pb2 as pb
from paygate.webhooks import SIGNATURE_HEADER, signature_header

USER_AGENT = "Paygate-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    outcome: str  # delivered, http_<status>, timeout, connect_error, error
    detail: str


def body_of(payload: bytes) -> bytes:
    """The stored event as the JSON a receiver gets: the proto3 JSON mapping (camelCase, enums by name)."""
    event = pb.Event.FromString(payload)
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":"), sort_keys=True).encode()


def deliver(client: httpx.Client, url: str, secrets: list[str], event_id: str, event_type: str, body: bytes) -> Attempt:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Paygate-Event-Id": event_id,
        "Paygate-Event-Type": event_type,
        SIGNATURE_HEADER: signature_header(secrets, int(time.time()), body),
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return Attempt(False, "timeout", "the receiver did not answer in time")
    except httpx.ConnectError as error:
        return Attempt(False, "connect_error", f"could not connect: {type(error).__name__}")
    except httpx.HTTPError as error:
        return Attempt(False, "error", f"{type(error).__name__}")
    if 200 <= response.status_code < 300:
        return Attempt(True, "delivered", str(response.status_code))
    return Attempt(False, f"http_{response.status_code}", f"the receiver answered {response.status_code}")


def http_client(connect_timeout_s: float, read_timeout_s: float) -> httpx.Client:
    timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
