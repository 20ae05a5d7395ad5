"""gRPC server reflection on the gateway, so that `grpcurl` and `buf curl` find the services without a copy of the
protos (docs/architecture.md, "The gateway").

grpcio-reflection serves `grpc.reflection.v1alpha.ServerReflection`. Current clients ask for
`grpc.reflection.v1.ServerReflection` first: the two services have the same messages, field for field (v1 is
v1alpha renamed), so the v1 method is the same servicer under the v1 name, with the v1alpha messages' codecs.

Reflection answers without a signature, like the health service: it tells what the repository's protos already
say, and nothing about keys, owners or money (docs/security.md).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from paygate.v1 import payment_gateway_pb2 as pb

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["PaymentGateway"].full_name,
    health.SERVICE_NAME,
    V1_SERVICE,
    reflection.SERVICE_NAME,
)


def enable(server: grpc.aio.Server) -> None:
    """Serve reflection (v1 and v1alpha) for the gateway's services on `server`."""
    servicer = reflection.aio.ReflectionServicer(SERVICE_NAMES)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
