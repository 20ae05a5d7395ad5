"""Paygate: shared pieces that the gateway, the workers and callers all need.

`paygate.v1` holds the generated protobuf/gRPC stubs, `paygate.signing` the request-signing scheme,
`paygate.client` a signing client, `runtime.settings` the typed configuration.
"""

__version__ = "0.1.0"
