"""Which user a request names, read from its protobuf bytes without deserializing them (docs/security.md, "Rate
limits and quotas").

The gateway never parses payment messages (docs/architecture.md), but a per-user rate limit needs the user. So it
walks the top-level fields of the wire format (tags and lengths only) and takes the one string field that names
the user whose wallet the method acts on. The field numbers come from the generated descriptors, never by hand:
`user_id`, and for Transfer the payer, `from_user_id` (docs/decisions.md #70). Bytes that are not a well-formed
message, a field of the wrong wire type, or a value longer than any user id can be give no user: no user bucket
is drawn from, and the worker refuses the body anyway.
"""

from __future__ import annotations

from paygate.scopes import method_path
from paygate.v1 import payment_gateway_pb2 as pb

# The user field of each method's request, in order of preference (the payer first).
_USER_FIELDS = ("user_id", "from_user_id")
# User ids are at most 64 characters (docs/api.md); anything longer is refused by the worker anyway.
MAX_USER_BYTES = 64
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _user_field_numbers() -> dict[str, int]:
    service = pb.DESCRIPTOR.services_by_name["PaymentGateway"]
    numbers: dict[str, int] = {}
    for method in service.methods:
        fields = method.input_type.fields_by_name
        for name in _USER_FIELDS:
            if name in fields:
                numbers[method_path(method.name)] = fields[name].number
                break
    return numbers


USER_FIELD_BY_PATH = _user_field_numbers()


def user_of(path: str, body: bytes) -> bytes | None:
    """The user a call to `path` names (its raw UTF-8 bytes), or None: no user field, absent, empty or malformed."""
    number = USER_FIELD_BY_PATH.get(path)
    if number is None:
        return None
    return string_field(body, number)


def string_field(body: bytes, number: int) -> bytes | None:
    """The last value of top-level length-delimited field `number` (protobuf: the last one wins), or None when
    the bytes are not a well-formed message, the field is absent, empty or too long, or has another wire type."""
    found: bytes | None = None
    position, end = 0, len(body)
    while position < end:
        tag, position = _varint(body, position)
        if tag is None:
            return None
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            return None
        if wire_type == _VARINT:
            _, position = _varint(body, position)
            if _ is None:
                return None
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(body, position)
            if length is None or position + length > end:
                return None
            if field == number:
                found = body[position : position + length]
            position += length
        else:
            return None  # groups (3, 4) are not used by our messages; 6 and 7 do not exist
        if field == number and wire_type != _LENGTH_DELIMITED:
            return None
    if position != end or not found or len(found) > MAX_USER_BYTES:
        return None
    return found


def _varint(body: bytes, position: int) -> tuple[int | None, int]:
    """A base-128 varint at `position` (at most 10 bytes) and the position after it; None when truncated."""
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(body):
            return None, position
        byte = body[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    return None, position
