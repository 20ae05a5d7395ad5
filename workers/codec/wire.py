"""Request bytes → protobuf message, with a refusal that names the field when the bytes are not a valid message.

protobuf refuses a string field whose bytes are not UTF-8 (lone surrogates included) with one DecodeError for the
whole message. To tell the caller *which* field, a refused body is parsed a second time as a "lenient" twin of its
type, in which every string field is declared `bytes`; the fields whose bytes do not decode are then named.
The twins are built once from the API's own descriptors, so they can never drift from the contract.
"""

from __future__ import annotations

import functools
from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from paygate.v1 import payment_gateway_pb2 as pb
from runtime.errors import FieldViolation, InvalidArgument

RequestT = TypeVar("RequestT", bound=Message)

_API_PACKAGE = ".paygate.v1."
_TWIN_PACKAGE = "paygate.v1.lenient"
MAX_NAMED_FIELDS = 16


def parse(request_type: type[RequestT], body: bytes) -> RequestT:
    """Parse `body`, or raise InvalidArgument naming every string field with invalid UTF-8."""
    try:
        return request_type.FromString(body)
    except DecodeError:
        bad_fields = _fields_with_bad_utf8(request_type.DESCRIPTOR, body)  # type: ignore[arg-type]
    if bad_fields:
        raise InvalidArgument(
            [FieldViolation(name, "must be valid UTF-8 text (no lone surrogates)") for name in bad_fields]
        ) from None
    name = request_type.DESCRIPTOR.full_name
    raise InvalidArgument(
        [FieldViolation("request", f"the body is not a valid {name} message (corrupt or truncated bytes)")]
    ) from None


def _fields_with_bad_utf8(descriptor: Descriptor, body: bytes) -> list[str]:
    twin = _twin_class(descriptor.name)
    try:
        message = twin.FromString(body)
    except DecodeError:
        return []  # corrupt beyond a text problem: the caller gets the general refusal
    found: list[str] = []
    _collect(message, descriptor, "", found)
    return found[:MAX_NAMED_FIELDS]


def _collect(message: Message, original: Descriptor, prefix: str, found: list[str]) -> None:
    for twin_field, value in message.ListFields():
        field = original.fields_by_name[twin_field.name]
        path = f"{prefix}{field.name}"
        values = value if _is_repeated(field) else [value]
        for item in values:
            if field.type == FieldDescriptor.TYPE_STRING and not _is_utf8(item):
                found.append(path)
                break
            nested = field.message_type
            if (
                field.type == FieldDescriptor.TYPE_MESSAGE
                and nested is not None
                and nested.full_name.startswith("paygate.")
            ):
                _collect(item, nested, f"{path}.", found)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")  # strict: surrogates and overlong forms are refused, as protobuf does
    except UnicodeDecodeError:
        return False
    return True


@functools.cache
def _twin_class(message_name: str) -> type[Message]:
    return message_factory.GetMessageClass(_twin_pool().FindMessageTypeByName(f"{_TWIN_PACKAGE}.{message_name}"))


@functools.cache
def _twin_pool() -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file)
    file.name = "paygate/v1/lenient_twin.proto"
    file.package = _TWIN_PACKAGE
    file.ClearField("service")
    for message in file.message_type:
        _loosen(message)
    pool = descriptor_pool.DescriptorPool()
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    pool.Add(timestamp)
    pool.Add(file)
    return pool


def _loosen(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        if field.type_name.startswith(_API_PACKAGE):
            field.type_name = f".{_TWIN_PACKAGE}.{field.type_name[len(_API_PACKAGE) :]}"
    for nested in message.nested_type:
        _loosen(nested)


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 6 deprecates `label`; newer upb builds only have `is_repeated`.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)  # type: ignore[attr-defined]
