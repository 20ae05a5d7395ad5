#!/opt/venv/bin/python
"""Exit 0 when the gRPC health service (grpc.health.v1) at ADDRESS reports SERVING, else 1.

Usage: paygate-healthcheck [ADDRESS] [SERVICE]
    ADDRESS  HOST:PORT of a Paygate gateway or worker (default 127.0.0.1:50051)
    SERVICE  health service name (default "", the whole server; or paygate.v1.PaymentGateway)

Used by the Compose healthchecks; Kubernetes uses its native `grpc` probes instead. Note that a gateway
reports NOT_SERVING until at least one worker is healthy, so this check also says "the gateway can serve".
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 2.0


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else "127.0.0.1:50051"
    service = argv[2] if len(argv) > 2 else ""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S
            )
    except grpc.RpcError as error:
        print(f"{address}: health check failed: {error.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
