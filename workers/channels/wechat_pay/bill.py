"""WeChat Pay's daily trade bill (GET /v3/bill/tradebill, bill_type=ALL), as downloaded from `download_url`.

Expected layout (a plain data stream: we do not ask for tar_type=GZIP):

1. the detail header, comma-separated column names (possibly behind a UTF-8 byte-order mark);
2. one line per payment or refund, every field prefixed with a backtick (`) so spreadsheets keep long numbers;
3. the summary header, starting with 总交易单数 (number of lines);
4. one summary line; its first field must equal the number of detail lines, which catches a truncated download.

Columns are found by name, in any order (WeChat says the order may change); the ones we read:

  ============  ============================================================================================
  交易时间       time of the payment, or of the refund's acceptance; yyyy-MM-dd HH:mm:ss, Beijing time
  微信订单号      WeChat's transaction_id
  商户订单号      our out_trade_no
  交易状态       SUCCESS (or REVOKED …) for a payment line, REFUND for a refund line
  货币种类       CNY
  订单金额       the payment's total in yuan (older bills: 总金额)
  微信退款单号    WeChat's refund_id (refund lines)
  商户退款单号    our out_refund_no (refund lines)
  申请退款金额    the refund asked for, in yuan (refund lines; older bills: 退款金额)
  退款状态       SUCCESS / PROCESSING / … (refund lines): a snapshot when the bill was made
  ============  ============================================================================================

Amounts are yuan with exactly two decimals, converted exactly (never through float).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Sequence
from datetime import datetime

from workers.channels.base import CHINA_TIME, NotificationKind, ProviderAnswerError, StatementLine, parse_yuan

CHINA = CHINA_TIME
SUMMARY_FIRST_COLUMN = "总交易单数"
_COLUMNS: dict[str, tuple[str, ...]] = {
    "time": ("交易时间",),
    "trade_no": ("微信订单号",),
    "out_trade_no": ("商户订单号",),
    "state": ("交易状态",),
    "currency": ("货币种类",),
    "total": ("订单金额", "总金额"),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "out_refund_no": ("商户退款单号",),
    "refund_no": ("微信退款单号",),
    "refund": ("申请退款金额", "退款金额"),
    "refund_state": ("退款状态",),
}


def _decode(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030")


def _cells(line: str) -> list[str]:
    return [cell.strip().removeprefix("`").strip() for cell in next(csv.reader([line]))]


def _locate(header: Sequence[str]) -> dict[str, int]:
    where: dict[str, int] = {}
    for field, names in (_COLUMNS | _OPTIONAL).items():
        # Older bills have both 退款金额 and 申请退款金额: the first name listed is preferred.
        index = next((header.index(name) for name in names if name in header), None)
        if index is not None:
            where[field] = index
        elif field in _COLUMNS:
            raise ProviderAnswerError(f"WeChat Pay bill: no {names[0]} column")
    return where


def _line(row: Sequence[str], where: dict[str, int], number: int) -> StatementLine:
    if len(row) <= max(where.values()):
        raise ProviderAnswerError(f"WeChat Pay bill: line {number} has {len(row)} fields")
    refund = row[where["state"]] == "REFUND"
    if refund and not {"out_refund_no", "refund_no", "refund", "refund_state"} <= where.keys():
        raise ProviderAnswerError("WeChat Pay bill: a refund line in a bill without refund columns")
    try:
        amount = parse_yuan(row[where["refund"]] if refund else row[where["total"]])
        at = datetime.strptime(row[where["time"]], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    except ValueError as exc:
        raise ProviderAnswerError(f"WeChat Pay bill: line {number}: {exc}") from exc
    return StatementLine(
        kind=NotificationKind.REFUND if refund else NotificationKind.PAYMENT,
        out_trade_no=row[where["out_trade_no"]],
        trade_no=row[where["trade_no"]],
        out_refund_no=row[where["out_refund_no"]] if refund else "",
        amount_minor=amount,
        currency=row[where["currency"]],
        status=row[where["refund_state"]] if refund else row[where["state"]],
        at=at,
        refund_no=row[where["refund_no"]] if refund else "",
    )


def parse(body: bytes) -> list[StatementLine]:
    try:
        lines = [line for line in _decode(body).splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ProviderAnswerError(f"WeChat Pay bill: undecodable: {exc}") from exc
    summary_at = next((i for i, line in enumerate(lines) if _cells(line)[0] == SUMMARY_FIRST_COLUMN), None)
    if not lines or summary_at is None or summary_at == 0 or len(lines) != summary_at + 2:
        raise ProviderAnswerError("WeChat Pay bill: not a header, lines, summary header and one summary line")
    where = _locate(_cells(lines[0]))
    details = [_line(_cells(line), where, number) for number, line in enumerate(lines[1:summary_at], start=2)]
    stated = _cells(lines[summary_at + 1])[0]
    if stated != str(len(details)):
        raise ProviderAnswerError(f"WeChat Pay bill: the summary counts {stated} lines, the file has {len(details)}")
    return details
