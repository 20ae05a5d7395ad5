"""Alipay's daily trade bill (bill_type=trade), as downloaded from `bill_download_url`.

What Alipay serves is a zip of CSV files: the detail file (业务明细) and a summary (业务明细(汇总)). Member names
are GBK without the zip UTF-8 flag, so the detail file is recognised by its header, not by its name. A bare CSV
body (no zip) is accepted as well.

Expected layout of the detail CSV:

- encoding GBK (Alipay's), or UTF-8 with or without a byte-order mark;
- lines starting with `#` are comments (title, account, period, "end of list", totals) and are skipped;
- the first other line is the header; columns are found by name, in any order, among others we ignore:

  ======================  ================  ==================================================================
  Alipay's column         or (plain)        meaning
  ======================  ================  ==================================================================
  支付宝交易号              trade_no          Alipay's trade number
  商户订单号                out_trade_no      our attempt id
  业务类型                  business_type     交易 / payment, or 退款 / refund
  订单金额(元)              amount            the trade's amount, yuan with two decimals: a payment line's
                                              amount (on a refund line it is still the trade's total)
  商家实收(元) (optional)   received          what the merchant received, yuan; negative on a refund line,
                                              where its magnitude is the refund's amount (without the column,
                                              a refund line's amount column is read as the refund's amount)
  退款批次号/请求号          out_request_no    for a refund: our refund id (the out_request_no we sent)
  完成时间                  time              yyyy-MM-dd HH:mm:ss, Beijing time
  交易状态 (optional)       status            the line's status; Alipay's own bill has none (only completed
                                              business is listed), so the business type word is kept instead
  ======================  ================  ==================================================================

Alipay writes the brackets of 订单金额(元) full-width; both widths are accepted. Alipay's bill names no refund id
of its own, so a line's refund_no stays empty. Every field is stripped of surrounding whitespace: Alipay pads
numbers with tabs so that spreadsheets keep them as text.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Sequence

from workers.channels.alipay.money import parse_china_time, parse_yuan
from workers.channels.base import NotificationKind, ProviderAnswerError, StatementLine

_COLUMNS: dict[str, tuple[str, ...]] = {
    "trade_no": ("支付宝交易号", "trade_no"),
    "out_trade_no": ("商户订单号", "out_trade_no"),
    "business_type": ("业务类型", "business_type"),
    "amount": ("订单金额\uff08元\uff09", "订单金额(元)", "amount"),  # full-width brackets in Alipay's own
    "out_request_no": ("退款批次号/请求号", "out_request_no"),
    "time": ("完成时间", "time"),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "received": ("商家实收\uff08元\uff09", "商家实收(元)", "received"),
    "status": ("交易状态", "状态", "status"),
}
_KINDS = {"交易": NotificationKind.PAYMENT, "payment": NotificationKind.PAYMENT}
_KINDS |= {"退款": NotificationKind.REFUND, "refund": NotificationKind.REFUND}
# A daily bill of a busy merchant is a few MB; far more than this inside a zip is a zip bomb, not a bill.
_MAX_MEMBER_BYTES = 256 * 1024 * 1024


def decode(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8) :].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030")  # a superset of GBK: what "ANSI" means on a Chinese Windows


def _rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [[cell.strip() for cell in row] for row in csv.reader(lines)]


def _locate(header: Sequence[str]) -> dict[str, int] | None:
    """Column positions by field, or None when this is not a detail header (the summary file, say)."""
    found: dict[str, int] = {}
    for field, names in (_COLUMNS | _OPTIONAL).items():
        matches = [index for index, name in enumerate(header) if name in names]
        if len(matches) > 1:
            raise ProviderAnswerError(f"Alipay bill: column {field} appears twice")
        if matches:
            found[field] = matches[0]
    return found if all(field in found for field in _COLUMNS) else None


def _line(row: Sequence[str], where: dict[str, int], number: int) -> StatementLine:
    if len(row) <= max(where.values()):
        raise ProviderAnswerError(f"Alipay bill: line {number} has {len(row)} fields")
    kind = _KINDS.get(row[where["business_type"]])
    if kind is None:
        raise ProviderAnswerError(f"Alipay bill: line {number} has business type {row[where['business_type']]!r}")
    refund = kind is NotificationKind.REFUND
    column = "received" if refund and "received" in where else "amount"
    try:
        amount = parse_yuan(row[where[column]], allow_negative=refund)
        at = parse_china_time(row[where["time"]])
    except ValueError as exc:
        raise ProviderAnswerError(f"Alipay bill: line {number}: {exc}") from exc
    status = row[where["status"]] if "status" in where else row[where["business_type"]]
    return StatementLine(
        kind=kind,
        out_trade_no=row[where["out_trade_no"]],
        trade_no=row[where["trade_no"]],
        out_refund_no=row[where["out_request_no"]] if refund else "",
        amount_minor=abs(amount),  # the bill states refunds as money going out; the line's kind says which way
        currency="CNY",
        status=status,
        at=at,
    )


def parse_csv(text: str) -> list[StatementLine] | None:
    """The lines of one detail CSV, or None when `text` is some other CSV (the summary)."""
    rows = _rows(text)
    if not rows:
        return None
    where = _locate(rows[0])
    if where is None:
        return None
    return [_line(row, where, number) for number, row in enumerate(rows[1:], start=2)]


def _members(body: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            texts = []
            for info in archive.infolist():
                if info.is_dir() or not info.filename.lower().endswith(".csv"):
                    continue
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise ProviderAnswerError(f"Alipay bill: {info.filename!r} is implausibly large")
                texts.append(decode(archive.read(info)))
            return texts
    except (zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError) as exc:
        raise ProviderAnswerError(f"Alipay bill: unreadable zip: {exc}") from exc


def parse(body: bytes) -> list[StatementLine]:
    """The statement lines of a downloaded bill (zip or bare CSV); ProviderAnswerError if it is not one."""
    try:
        texts = _members(body) if body.startswith(b"PK\x03\x04") else [decode(body)]
    except UnicodeDecodeError as exc:
        raise ProviderAnswerError(f"Alipay bill: undecodable text: {exc}") from exc
    details = [lines for lines in (parse_csv(text) for text in texts) if lines is not None]
    if len(details) != 1:
        raise ProviderAnswerError(f"Alipay bill: expected one detail CSV, found {len(details)}")
    return details[0]
