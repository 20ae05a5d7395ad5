"""`paygate call METHOD JSON`: sign and send one PaymentGateway call from a shell, print the answer as JSON
(docs/signing.md, "From a shell").

The key comes from the environment (PAYGATE_KEY_ID, PAYGATE_KEY_SECRET) or a JSON file as `paygate keys create
--json` prints it (--key-file), never from the command line, where every user of the machine could read it. The
request is JSON in protobuf's mapping (field names as in the proto; unknown fields refused), from the argument or
stdin ("-"). The gateway's certificate is checked against --ca (default: the dev CA of the data directory).

Exit status: 0 answered; 1 the gateway refused the call (its status, message and decoded details are printed);
2 the command itself was wrong (unknown method, bad JSON, no key).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygate.client import PaygateClient
from paygate.signing import KEY_ID_PATTERN
from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import ConfigurationError
from runtime.settings import Settings

SERVICE = pb.DESCRIPTOR.services_by_name["PaymentGateway"]
DETAILS = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo)


def add_parser(subcommands: Any, common: Any) -> None:
    call = subcommands.add_parser("call", help="sign and send one PaymentGateway call; print the answer as JSON")
    common(call)
    call.add_argument("method", help="an RPC name (GetBalance) or its path (/paygate.v1.PaymentGateway/GetBalance)")
    call.add_argument("request", nargs="?", default="{}", help="the request as JSON ('-': read stdin; default {})")
    call.add_argument("--target", help="the gateway HOST:PORT (default: PAYGATE_LISTEN, 127.0.0.1:50051)")
    call.add_argument("--key-file", type=Path, help="a JSON file with key_id and secret (else PAYGATE_KEY_ID/_SECRET)")
    call.add_argument("--ca", type=Path, help="PEM CA of the gateway's certificate (default: <data dir>/tls/ca.pem)")
    call.add_argument("--plaintext", action="store_true", help="no TLS (a `paygate serve --plaintext` stack)")
    call.add_argument("--timeout-s", type=seconds, default=30.0, help="the call's deadline (default 30)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        method = _method(args.method)
        request = _request(method, args.request)
        key_id, secret = _key(args.key_file)
    except (ValueError, json_format.ParseError, OSError) as error:
        print(f"paygate: {error}", file=sys.stderr)
        return 2
    response_type = GetMessageClass(method.output_type)
    with _client(args, settings, key_id, secret) as client:
        try:
            result = client.call(method.name, request, response_type, timeout_s=args.timeout_s)
        except grpc.RpcError as error:
            print(json.dumps(_refusal(error), ensure_ascii=False, indent=2))
            return 1
    answer = json_format.MessageToDict(result.response, preserving_proto_field_name=True)
    shown = {"response": answer, "worker": result.worker, "request_id": result.request_id}
    print(json.dumps(shown, ensure_ascii=False, indent=2))
    return 0


def _method(name: str) -> Any:
    short = name.removeprefix(f"/{SERVICE.full_name}/")
    method = SERVICE.methods_by_name.get(short)
    if method is None:
        raise ValueError(f"no method {name!r}; one of: {', '.join(sorted(SERVICE.methods_by_name))}")
    if method.client_streaming or method.server_streaming:
        raise ValueError(f"{short} streams; follow events with PaygateClient.stream_events (docs/events.md)")
    return method


def _request(method: Any, text: str) -> Message:
    raw = sys.stdin.read() if text == "-" else text
    request: Message = GetMessageClass(method.input_type)()
    json_format.Parse(raw, request)  # unknown fields, wrong types and bad enum names are refused, naming them
    return request


def _key(key_file: Path | None) -> tuple[str, str]:
    if key_file is not None:
        stored = json.loads(key_file.read_text())
        if not isinstance(stored, dict) or not {"key_id", "secret"} <= stored.keys():
            raise ValueError(f"{key_file} must hold a JSON object with key_id and secret (as `keys create --json`)")
        return str(stored["key_id"]), str(stored["secret"])
    key_id, secret = os.environ.get("PAYGATE_KEY_ID", ""), os.environ.get("PAYGATE_KEY_SECRET", "")
    if not key_id or not secret:
        raise ValueError("no key: set PAYGATE_KEY_ID and PAYGATE_KEY_SECRET, or pass --key-file")
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError("PAYGATE_KEY_ID must be a key id as `paygate keys create` prints it (1-64 of [A-Za-z0-9_-])")
    return key_id, secret


def _client(args: argparse.Namespace, settings: Settings, key_id: str, secret: str) -> PaygateClient:
    target = args.target or settings.listen
    if args.plaintext:
        return PaygateClient(target, key_id, secret)
    ca = args.ca or settings.data_dir / "tls" / "ca.pem"
    if not ca.is_file():
        raise ConfigurationError(f"no CA at {ca}: pass --ca (the gateway's CA), or --plaintext for a plaintext stack")
    return PaygateClient(target, key_id, secret, root_certificates=ca)


def _refusal(error: grpc.RpcError) -> dict[str, Any]:
    """The status, message and every detail the gateway sent, decoded (google.rpc ErrorInfo, BadRequest, RetryInfo)."""
    shown: dict[str, Any] = {"code": error.code().name, "message": error.details()}
    status = rpc_status.from_call(error)
    for packed in status.details if status is not None else ():
        for kind in DETAILS:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                shown[kind.DESCRIPTOR.name] = json_format.MessageToDict(detail, preserving_proto_field_name=True)
    return shown


def seconds(text: str) -> float:
    """`nan` and `inf` are not deadlines: refused like any other non-number (argparse: exit 2)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value
