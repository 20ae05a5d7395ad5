"""A value that must not leak by accident: card numbers, phone numbers, keys, URLs with passwords.

`Secret` wraps a str or bytes. Every way a value usually escapes — repr, str, f-strings and `format`, logging
(`%s`/`%r` and structured fields), pickling, `json.dumps` — shows `Secret(***)` or refuses, and two secrets
compare in constant time. The clear value comes out only through `.reveal()`, a call that is easy to find in a
review (docs/security.md, "Card and personal data"). It lives in `paygate/` because callers' code (the client,
an SDK holding an API secret) needs it as much as the server does.
"""

from __future__ import annotations

import hmac
from typing import Any, Generic, NoReturn, TypeVar

ValueT = TypeVar("ValueT", str, bytes)
MASKED = "Secret(***)"


class Secret(Generic[ValueT]):
    __slots__ = ("_value",)

    def __init__(self, value: ValueT) -> None:
        if not isinstance(value, str | bytes):
            raise TypeError("a Secret wraps str or bytes")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> ValueT:
        """The clear value: call it only where the value is used (a cipher, a driver, the processor call)."""
        value: ValueT = object.__getattribute__(self, "_value")
        return value

    def __repr__(self) -> str:
        return MASKED

    __str__ = __repr__

    def __format__(self, _spec: str) -> str:
        return MASKED

    def __bool__(self) -> bool:
        """Whether a value is set (an empty secret means "not configured")."""
        return len(self.reveal()) > 0

    def __eq__(self, other: object) -> bool:
        # Only a Secret equals a Secret, compared in constant time; a bare str never does, so `secret == guess`
        # in a careless check is always False instead of a timing oracle.
        if not isinstance(other, Secret):
            return NotImplemented
        mine, theirs = self.reveal(), other.reveal()
        if type(mine) is not type(theirs):
            return False
        encoded = (mine.encode(), theirs.encode()) if isinstance(mine, str) else (mine, theirs)
        return hmac.compare_digest(*encoded)

    def __hash__(self) -> int:
        return hash(Secret)  # one bucket: a hash of the value would be a (weak) oracle for it

    def __setattr__(self, _name: str, _value: Any) -> NoReturn:
        raise AttributeError("a Secret is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not picklable; pass .reveal() deliberately if it must cross a process")

    def __copy__(self) -> Secret[ValueT]:
        return self

    def __deepcopy__(self, _memo: object) -> Secret[ValueT]:
        return self
