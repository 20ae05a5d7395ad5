"""The documented limits of the API (docs/api.md): what a caller may send, and how far any balance may go.

They live with the caller-facing package because they are part of the contract: a client can check a request
against them before sending it, and the server refuses anything beyond them with INVALID_ARGUMENT (a field) or
FAILED_PRECONDITION (a balance), never by overflowing. The database schema mirrors them in CHECK constraints.

Why these numbers (docs/decisions.md): int64 holds about 9.22 x 10^18. One call moves at most 10^15 minor units,
a learner's wallet or a creator's payable holds at most 10^17 (100 maximal calls), and the platform's own accounts
(revenue, one clearing account per channel), which gather the money of every learner, stay within
+/- 4 x 10^18. Every balance plus or minus any single amount therefore stays far inside int64, and a per-account
ceiling is checked in the same SQL statement that moves the balance.
"""

from __future__ import annotations

from typing import Final

# Money: minor units (fen for CNY).
MAX_AMOUNT_MINOR: Final = 10**15
MAX_USER_BALANCE_MINOR: Final = 10**17  # wallets and creator payables: never below 0, never above this
MAX_SYSTEM_BALANCE_MINOR: Final = 4 * 10**18  # platform revenue and channel clearing: within +/- this

# Identifiers (order_id, user_id, payee_id, payment_id, refund_id, transfer_id, ...): ASCII, case-sensitive.
IDENTIFIER_ALPHABET: Final = "A-Z a-z 0-9 _ . : -"
IDENTIFIER_MAX_CHARS: Final = 64

# Free text (description, reason): Unicode without control characters.
TEXT_MAX_CHARS: Final = 256

# Rates ("0.15"): a plain decimal with at most this many decimal places.
RATE_MAX_DECIMALS: Final = 6

# Paging.
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
