#!/opt/venv/bin/python
"""Exit 0 when the gRPC health service (grpc.health.v1) at ADDRESS reports SERVING, else 1.

Usage: paygate-healthcheck [--ca PEM [--server-name NAME] [--cert PEM --key PEM]] [ADDRESS] [SERVICE]
    ADDRESS        HOST:PORT of a Paygate gateway or worker (default 127.0.0.1:50051)
    SERVICE        health service name (default "", the whole server; or paygate.v1.PaymentGateway)
    --ca           TLS: the CA that signed the server's certificate (without it: plaintext, dev stacks only)
    --server-name  the name to verify the certificate against when it is not ADDRESS's host (paygate-worker)
    --cert/--key   a client certificate, for ports that require one (a worker's: its own certificate)

Used by the Compose healthchecks and the Kubernetes exec probes (native `grpc` probes cannot speak TLS). Note
that a gateway reports NOT_SERVING until at least one worker is healthy, so this check also says "the gateway
can serve".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 2.0


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.ca:
        return grpc.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes() if args.key else None,
        certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.address, credentials, options=options)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/deploy parse the probes of deploy/kubernetes/ and the Compose file with it)."""
    parser = argparse.ArgumentParser(prog="paygate-healthcheck")
    parser.add_argument("address", nargs="?", default="127.0.0.1:50051")
    parser.add_argument("service", nargs="?", default="")
    parser.add_argument("--ca")
    parser.add_argument("--server-name")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    if bool(args.cert) != bool(args.key):
        print("paygate-healthcheck: give --cert and --key together", file=sys.stderr)
        return 2
    try:
        with _channel(args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=TIMEOUT_S
            )
    except (grpc.RpcError, OSError) as error:
        code = error.code().name if isinstance(error, grpc.RpcError) else str(error)
        print(f"{args.address}: health check failed: {code}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{args.address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
