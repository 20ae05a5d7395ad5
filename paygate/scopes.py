"""Which scope each `PaymentGateway` method needs. A key holds a list of scopes; `*` means every method."""

from __future__ import annotations

SERVICE_NAME = "paygate.v1.PaymentGateway"
ALL_SCOPES = "*"

METHOD_SCOPES: dict[str, str] = {
    "TopUp": "payments:write",
    "CreatePayment": "payments:write",
    "GetPayment": "payments:read",
    "GetBalance": "balances:read",
    "RefundPayment": "refunds:write",
    "Transfer": "transfers:write",
    "ListTransactions": "transactions:read",
    "QuotePrice": "prices:read",
    "StreamEvents": "events:read",
    "CreateWebhookEndpoint": "webhooks:write",
    "ListWebhookEndpoints": "webhooks:read",
    "DeleteWebhookEndpoint": "webhooks:write",
    "RotateWebhookEndpointSecret": "webhooks:write",
    "TokenizeCard": "cards:write",
}
# Methods that answer with a stream of messages (the gateway relays each as it comes); every other is unary.
STREAMING_METHODS = frozenset({"StreamEvents"})

KNOWN_SCOPES = frozenset(METHOD_SCOPES.values()) | {ALL_SCOPES}


def method_path(method: str) -> str:
    return f"/{SERVICE_NAME}/{method}"


METHOD_PATHS: dict[str, str] = {method_path(name): scope for name, scope in METHOD_SCOPES.items()}
STREAMING_PATHS = frozenset(method_path(name) for name in STREAMING_METHODS)
UNARY_PATHS = frozenset(METHOD_PATHS) - STREAMING_PATHS
# Unary methods that change nothing: the gateway may resend them to another worker after a lost connection.
READ_ONLY_PATHS = frozenset(path for path in UNARY_PATHS if METHOD_PATHS[path].endswith(":read"))


def parse_scopes(text: str) -> tuple[str, ...]:
    """Parse `a,b` into a sorted tuple; unknown scopes are an error that names them."""
    scopes = tuple(sorted({s.strip() for s in text.split(",") if s.strip()}))
    if not scopes:
        raise ValueError("at least one scope is required")
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}")
    return scopes


def allows(scopes: tuple[str, ...], path: str) -> bool:
    needed = METHOD_PATHS.get(path)
    return needed is not None and (ALL_SCOPES in scopes or needed in scopes)
