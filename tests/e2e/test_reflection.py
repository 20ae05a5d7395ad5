"""Server reflection on the gateway (gateway/reflection.py): a client that has no copy of the protos finds the
services and their methods, through both reflection versions, without a signature and over TLS."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support import Stack

SERVICES = {
    "paygate.v1.PaymentGateway",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_v1alpha_reflection_lists_the_services_and_describes_the_api(stack: Stack) -> None:
    with stack.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == SERVICES
        found = database.FindFileContainingSymbol("paygate.v1.PaymentGateway")
    methods = {method.name for service in found.service for method in service.method}
    assert {"CreatePayment", "TopUp", "RefundPayment", "TokenizeCard", "StreamEvents"} <= methods
    assert any(message.name == "CreatePaymentRequest" for message in found.message_type)


def test_v1_reflection_answers_the_same_under_its_own_name(stack: Stack) -> None:
    """grpcurl and buf curl ask for grpc.reflection.v1 first; its messages are v1alpha's, field for field."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="paygate.v1.PaymentGateway")
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    with stack.channel() as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = list(call(iter([listing, request]), timeout=20))
    assert {service.name for service in answers[0].list_services_response.service} == SERVICES
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    assert any(service.name == "PaymentGateway" for file in files for service in file.service)


def test_reflection_needs_no_signature_but_payment_methods_still_do(stack: Stack) -> None:
    with stack.channel() as channel:
        assert ProtoReflectionDescriptorDatabase(channel).get_services()
        unsigned = channel.unary_unary("/paygate.v1.PaymentGateway/GetBalance")
        try:
            unsigned(b"", timeout=20)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("an unsigned payment call was answered")
