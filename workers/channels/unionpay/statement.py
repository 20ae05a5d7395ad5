"""The settlement file that fileTransfer (txnType 76) hands back, in the simplified form this adapter reads.

Real UnionPay: `fileContent` is base64 of a deflated ZIP archive holding several fixed-width files (the "INN"
transaction detail file among them, ~50 columns). This adapter reads a documented simplification instead:
`fileContent` = base64(zlib-deflate(UTF-8 text)), one transaction per line, `|`-separated, in this order:

    txnType|orderId|queryId|txnAmt|currencyCode|respCode|txnTime|origOrderId

- txnType: `01` consume (a payment) or `04` refund; any other type is refused rather than guessed at.
- orderId: our order number: out_trade_no for a consume, out_refund_no for a refund.
- queryId: UnionPay's serial number of this transaction.
- txnAmt: integer fen; currencyCode: ISO 4217 numeric (`156` = CNY).
- respCode: UnionPay's result code for the line (kept as the line's status).
- txnTime: yyyyMMddHHmmss, China time (UTC+8).
- origOrderId: for a refund, the out_trade_no of the refunded consume; empty for a consume.

Blank lines and lines starting with `#` (a header) are skipped. Reading the real INN file means replacing
`parse_lines` with a fixed-width reader; nothing else changes.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import datetime

from workers.channels.base import CHINA_TIME, NotificationKind, ProviderAnswerError, StatementLine

CHINA = CHINA_TIME
CURRENCIES = {"156": "CNY"}
COLUMNS = ("txnType", "orderId", "queryId", "txnAmt", "currencyCode", "respCode", "txnTime", "origOrderId")
# A day's file for a course platform is kilobytes; refuse to inflate a "zip bomb" into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024


def decode_file(file_content: str) -> str:
    try:
        packed = base64.b64decode(file_content, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_FILE_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ProviderAnswerError("the settlement file is truncated or larger than we accept")
        return raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError) as error:
        raise ProviderAnswerError(f"the settlement file does not decode (base64 of deflated UTF-8): {error}") from error


def parse_lines(text: str) -> list[StatementLine]:
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) != len(COLUMNS):
            raise ProviderAnswerError(f"settlement line {number}: {len(fields)} columns, expected {len(COLUMNS)}")
        lines.append(_line(number, dict(zip(COLUMNS, (f.strip() for f in fields), strict=True))))
    return lines


def _line(number: int, row: dict[str, str]) -> StatementLine:
    kind = {"01": NotificationKind.PAYMENT, "04": NotificationKind.REFUND}.get(row["txnType"])
    if kind is None:
        raise ProviderAnswerError(f"settlement line {number}: transaction type {row['txnType']!r} is not handled")
    if not (row["txnAmt"].isascii() and row["txnAmt"].isdigit()) or not row["orderId"] or not row["queryId"]:
        raise ProviderAnswerError(f"settlement line {number}: missing order number, serial number or amount")
    try:
        at = datetime.strptime(row["txnTime"], "%Y%m%d%H%M%S").replace(tzinfo=CHINA)
    except ValueError as error:
        raise ProviderAnswerError(f"settlement line {number}: bad txnTime {row['txnTime']!r}") from error
    refund = kind is NotificationKind.REFUND
    return StatementLine(
        kind=kind,
        out_trade_no=row["origOrderId"] if refund else row["orderId"],
        trade_no=row["queryId"],
        out_refund_no=row["orderId"] if refund else "",
        amount_minor=int(row["txnAmt"]),
        currency=CURRENCIES.get(row["currencyCode"], row["currencyCode"]),
        status=row["respCode"],
        at=at,
    )
