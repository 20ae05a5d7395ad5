"""UnionPay online gateway (全渠道, version 5.1.0) as a pure translator (see workers/channels/base.py).

Transactions used: consume (txnType 01, front page/WAP or in-app), state query (00), refund (04) and the
settlement-file transfer (76). Every request is a signed form POST (signature.py); every answer is a signed
`k=v&...` message whose signature is checked before anything in it is believed.

UnionPay knows a transaction by merId + orderId + txnTime, so a query must send the *original* txnTime. Our
consume's txnTime is therefore the order's `created_at` (the attempt's creation time), never the wall clock,
and `query`/`close` take that same `created_at` as an extra keyword (see `query`). Refunds carry their own
`created_at`, so refund queries need nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime

from workers.channels.base import (
    NOT_FOUND,
    AttemptStatus,
    HttpCall,
    HttpReply,
    Notification,
    NotificationKind,
    NotificationRejected,
    Order,
    ProviderAnswerError,
    ProviderRefund,
    ProviderState,
    RefundOrder,
    RefundStatus,
    Scene,
    StatementLine,
)
from workers.channels.unionpay.config import UnionPayConfig
from workers.channels.unionpay.signature import SignatureError, encode_form, parse_form, sign, verify
from workers.channels.unionpay.statement import CHINA, CURRENCIES, decode_file, parse_lines
from workers.domain.types import Method

_API = "/gateway/api"
_SUCCESS = frozenset({"00", "A6"})  # A6: "success with defects" (e.g. partial data); money was taken
_IN_PROGRESS = frozenset({"03", "04", "05"})  # timed out / state unknown / accepted: ask again later
_DUPLICATE = "12"  # "repeated transaction": the first one may well have gone through
_NOT_FOUND = "34"
_CHANNEL = {Scene.PAGE: "07", Scene.WAP: "08", Scene.IN_APP: "08"}  # 07 internet (PC), 08 mobile
_FORM = (("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8"),)


def china_time(moment: datetime) -> str:
    """yyyyMMddHHmmss in China time. A naive datetime is taken as UTC (how the store hands them back)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(CHINA).strftime("%Y%m%d%H%M%S")


def _order_number(value: str, what: str) -> str:
    # UnionPay's orderId is 8-40 letters and digits; "-" and "_" are refused by the gateway, so refuse here,
    # clearly, instead of sending an order that can only fail.
    if not (8 <= len(value) <= 40 and value.isascii() and value.isalnum()):
        raise ValueError(f"UnionPay needs {what} of 8-40 ASCII letters and digits, got {value!r}")
    return value


def _fen(amount_minor: int) -> str:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValueError(f"amount must be a positive whole number of fen, got {amount_minor!r}")
    return str(amount_minor)


def _cny(currency: str) -> str:
    if currency != "CNY":
        raise ValueError(f"the UnionPay online gateway settles CNY only (currencyCode 156); got {currency!r}")
    return "156"


class UnionPayProvider:
    method = Method.UNIONPAY

    def __init__(self, config: UnionPayConfig) -> None:
        self.config = config
        self.merchant_id = config.mer_id

    # -- requests ---------------------------------------------------------------------------------------------

    def _params(self, txn_type: str, txn_sub_type: str, biz_type: str, txn_time: datetime) -> dict[str, str]:
        return {
            "version": "5.1.0",
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": self.config.cert_id,
            "accessType": "0",  # merchant connected directly
            "merId": self.config.mer_id,
            "txnType": txn_type,
            "txnSubType": txn_sub_type,
            "bizType": biz_type,
            "txnTime": china_time(txn_time),
        }

    def _signed(self, params: dict[str, str]) -> dict[str, str]:
        return {**params, "signature": sign(params, self.config.private_key)}

    def _post(self, url: str, params: dict[str, str], purpose: str) -> HttpCall:
        # Every call here is idempotent: queries and file transfers change nothing, and UnionPay refuses a second
        # consume or refund with the same orderId + txnTime (respCode 12), which we read as "ask a query".
        body = encode_form(self._signed(params)).encode("ascii")
        return HttpCall("POST", url, _FORM, body, idempotent=True, purpose=purpose)

    def create(self, order: Order, now: datetime) -> HttpCall | ProviderState:
        """Page/WAP: no call; the signed form as a URL. The real flow is an auto-submitting HTML form POSTed to
        frontTransReq.do; the gateway reads the same fields from the URL's query, so the redirect URL is that
        form. In-app: a POST to appTransReq.do whose answer carries the `tn` the UnionPay app pays.

        `now` is not used: txnTime is the order's created_at, which the query must send again."""
        channel = _CHANNEL.get(order.scene)
        if channel is None:
            raise ValueError(f"UnionPay takes scenes page, wap and in_app, not {order.scene.value}")
        if order.expires_at <= order.created_at:
            raise ValueError("the order expires before it is created")
        params = self._params("01", "01", "000201", order.created_at)
        params |= {
            "channelType": channel,
            "orderId": _order_number(order.out_trade_no, "out_trade_no"),
            "txnAmt": _fen(order.amount_minor),
            "currencyCode": _cny(order.currency),
            "backUrl": order.notify_url or self.config.back_url,
            "payTimeout": china_time(order.expires_at),  # after this UnionPay refuses to take the payment
        }
        if order.scene is Scene.IN_APP:
            return self._post(f"{self.config.base_url}{_API}/appTransReq.do", params, "create")
        params["frontUrl"] = self.config.front_url
        pay_url = f"{self.config.base_url}{_API}/frontTransReq.do?{encode_form(self._signed(params))}"
        return ProviderState(
            AttemptStatus.PENDING,
            order.out_trade_no,
            amount_minor=order.amount_minor,
            currency=order.currency,
            merchant_id=self.config.mer_id,
            pay_url=pay_url,
        )

    def query(self, out_trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        """queryTrans by orderId + txnTime. `created_at` must be the attempt's created_at (the consume's txnTime);
        base.py's `query(out_trade_no, now)` has no room for it, so it is an extra keyword whose default, `now`,
        only finds orders created in that same second: anything else answers "not found". Callers must pass it
        until base.py's signature carries it."""
        params = self._params("00", "00", "000000", created_at or now)
        params["orderId"] = out_trade_no
        return self._post(f"{self.config.base_url}{_API}/queryTrans.do", params, "query")

    def close(self, out_trade_no: str, trade_no: str, now: datetime, created_at: datetime | None = None) -> HttpCall:
        """UnionPay has no "close" for an unpaid order: it stops accepting payment at payTimeout by itself. So a
        close is the query, and read_close says CLOSED for an order UnionPay does not have or did not pay, and
        SUCCEEDED for a paid one. A void (txnType 31) is deliberately not used: it reverses a *paid* consume,
        which base.py's close contract reports as SUCCEEDED, needs the original amount and a new orderId that
        close() does not get, works only the same day, and moves money back outside the refund path."""
        return replace(self.query(out_trade_no, now, created_at=created_at), purpose="close")

    def refund(self, order: RefundOrder, now: datetime) -> HttpCall:
        if not order.trade_no:
            raise ValueError("a UnionPay refund needs the consume's queryId (trade_no)")
        if order.amount_minor > order.total_minor:
            raise ValueError(f"refund of {order.amount_minor} exceeds the payment's {order.total_minor}")
        _cny(order.currency)
        params = self._params("04", "00", "000201", order.created_at)
        params |= {
            "channelType": "07",
            "orderId": _order_number(order.out_refund_no, "out_refund_no"),
            "origQryId": order.trade_no,
            "txnAmt": _fen(order.amount_minor),
            "backUrl": order.notify_url or self.config.back_url,
        }
        return self._post(f"{self.config.base_url}{_API}/backTransReq.do", params, "refund")

    def refund_query(self, order: RefundOrder, now: datetime) -> HttpCall:
        params = self._params("00", "00", "000000", order.created_at)  # the refund's own txnTime
        params["orderId"] = order.out_refund_no
        return self._post(f"{self.config.base_url}{_API}/queryTrans.do", params, "refund_query")

    def statement(self, day: date, now: datetime) -> HttpCall:
        params = self._params("76", "01", "000000", now)
        params |= {"settleDate": day.strftime("%m%d"), "fileType": "00"}
        return self._post(self.config.statement_url, params, "statement")

    # -- answers ----------------------------------------------------------------------------------------------

    def _answer(self, reply: HttpReply) -> dict[str, str]:
        if reply.status != 200:
            raise ProviderAnswerError(f"UnionPay answered HTTP {reply.status}")
        try:
            params = parse_form(reply.body)
            verify(params, self.config.platform_public_key, self.config.platform_cert_id)
        except SignatureError as error:
            raise ProviderAnswerError(f"UnionPay's answer is not trusted ({error.reason}): {error}") from error
        return params

    def _amount(self, params: Mapping[str, str]) -> int | None:
        text = params.get("txnAmt", "")
        if not text:
            return None
        if not (text.isascii() and text.isdigit()):
            raise ProviderAnswerError(f"UnionPay stated the amount {text!r}, not a whole number of fen")
        return int(text)

    @staticmethod
    def _currency(params: Mapping[str, str]) -> str:
        code = params.get("currencyCode", "")
        return CURRENCIES.get(code, code)  # an unexpected code stays as is, so the caller's cross-check fails

    @staticmethod
    def _same_order(params: Mapping[str, str], order_id: str) -> None:
        if params.get("orderId", order_id) != order_id:
            raise ProviderAnswerError(f"UnionPay answered about order {params['orderId']!r}, not {order_id!r}")

    def _same_merchant(self, params: Mapping[str, str]) -> None:
        # Refund types have no merchant_id for the caller to cross-check, so the adapter does it.
        if params.get("merId", self.config.mer_id) != self.config.mer_id:
            raise ProviderAnswerError(f"UnionPay answered for merchant {params['merId']!r}, not ours")

    def read_create(self, order: Order, reply: HttpReply) -> ProviderState:
        params = self._answer(reply)
        self._same_order(params, order.out_trade_no)
        code = params.get("respCode", "")
        if code == "00":
            if not params.get("tn"):
                raise ProviderAnswerError("UnionPay accepted the order but sent no tn")
            return ProviderState(
                AttemptStatus.PENDING,
                order.out_trade_no,
                amount_minor=self._amount(params),
                currency=self._currency(params),
                merchant_id=params.get("merId", ""),
                prepay_id=params["tn"],
            )
        if code in _IN_PROGRESS or code == _DUPLICATE or not code:
            raise ProviderAnswerError(f"UnionPay's answer leaves the order's state open (respCode {code!r})")
        return ProviderState(AttemptStatus.FAILED, order.out_trade_no, failure_reason=_reason(params, "respMsg", code))

    def _outcome(self, params: Mapping[str, str]) -> str:
        """The queried transaction's state: succeeded, pending, failed or not_found (raises when unknown)."""
        code = params.get("respCode", "")
        if code == _NOT_FOUND:
            return "not_found"
        if code != "00":
            # 03/04/05: the query itself timed out; anything else: the query was refused. Either way the
            # transaction's state is still unknown.
            raise ProviderAnswerError(f"UnionPay's query did not answer (respCode {code!r})")
        orig = params.get("origRespCode", "")
        if orig in _SUCCESS:
            return "succeeded"
        if orig in _IN_PROGRESS:
            return "pending"
        if not orig:
            raise ProviderAnswerError("UnionPay's query answer has no origRespCode")
        return "failed"

    def _query_state(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        params = self._answer(reply)
        outcome = self._outcome(params)
        if outcome == "not_found":
            return ProviderState(AttemptStatus.FAILED, out_trade_no, failure_reason=NOT_FOUND)
        self._same_order(params, out_trade_no)
        status = {"succeeded": AttemptStatus.SUCCEEDED, "pending": AttemptStatus.PENDING}.get(outcome)
        return ProviderState(
            status or AttemptStatus.FAILED,
            out_trade_no,
            trade_no=params.get("queryId", ""),
            amount_minor=self._amount(params),
            currency=self._currency(params),
            merchant_id=params.get("merId", ""),
            failure_reason="" if status else _reason(params, "origRespMsg", params["origRespCode"]),
        )

    def read_query(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        return self._query_state(out_trade_no, reply)

    def read_close(self, out_trade_no: str, reply: HttpReply) -> ProviderState:
        """Not found or not paid: CLOSED, final once payTimeout has passed. Before that a page order the payer
        has not submitted yet is "not found" too and could still be paid; that late payment then arrives as a
        notification for a closed attempt, which the caller has to handle like any late success."""
        state = self._query_state(out_trade_no, reply)
        if state.status is AttemptStatus.FAILED:
            return replace(state, status=AttemptStatus.CLOSED)
        return state  # SUCCEEDED, or PENDING while UnionPay is still processing a payment

    def read_refund(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        params = self._answer(reply)
        self._same_merchant(params)
        self._same_order(params, order.out_refund_no)
        code = params.get("respCode", "")
        if code == "00":  # accepted; the result comes by notification or refund query
            return ProviderRefund(
                RefundStatus.PENDING,
                order.out_refund_no,
                refund_no=params.get("queryId", ""),
                amount_minor=self._amount(params),
                currency=self._currency(params),
            )
        if code in _IN_PROGRESS or code == _DUPLICATE or not code:
            raise ProviderAnswerError(f"UnionPay's answer leaves the refund's state open (respCode {code!r})")
        return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=_reason(params, "respMsg", code))

    def read_refund_query(self, order: RefundOrder, reply: HttpReply) -> ProviderRefund:
        params = self._answer(reply)
        outcome = self._outcome(params)
        if outcome == "not_found":
            return ProviderRefund(RefundStatus.FAILED, order.out_refund_no, failure_reason=NOT_FOUND)
        self._same_merchant(params)
        self._same_order(params, order.out_refund_no)
        status = {"succeeded": RefundStatus.SUCCEEDED, "pending": RefundStatus.PENDING}.get(outcome)
        return ProviderRefund(
            status or RefundStatus.FAILED,
            order.out_refund_no,
            refund_no=params.get("queryId", ""),
            amount_minor=self._amount(params),
            currency=self._currency(params),
            failure_reason="" if status else _reason(params, "origRespMsg", params["origRespCode"]),
        )

    def read_statement(self, day: date, reply: HttpReply, now: datetime) -> HttpCall | list[StatementLine]:
        params = self._answer(reply)
        code = params.get("respCode", "")
        if code != "00":
            # 98: no file for that day (yet); anything else: refused. Try again later in both cases.
            raise ProviderAnswerError(f"UnionPay has no settlement file for {day} (respCode {code!r})")
        if params.get("settleDate", day.strftime("%m%d")) != day.strftime("%m%d"):
            raise ProviderAnswerError(f"UnionPay sent the file of {params['settleDate']}, not of {day}")
        if "fileContent" not in params:
            raise ProviderAnswerError("UnionPay's file answer carries no fileContent")
        return parse_lines(decode_file(params["fileContent"]))

    # -- notifications ----------------------------------------------------------------------------------------

    def read_notification(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Notification:
        """A consume (01) or refund (04) result POSTed to backUrl. UnionPay sends no timestamp to bound replays;
        the caller deduplicates on notification_id (queryId + txnType)."""
        try:
            params = parse_form(body)
            verify(params, self.config.platform_public_key, self.config.platform_cert_id)
        except SignatureError as error:
            raise NotificationRejected(error.reason, str(error)) from error
        txn_type, query_id, order_id = params.get("txnType"), params.get("queryId"), params.get("orderId")
        code, amount = params.get("respCode", ""), params.get("txnAmt", "")
        if txn_type not in ("01", "04") or not query_id or not order_id or not code:
            raise NotificationRejected("malformed", f"not a consume or refund result (txnType {txn_type!r})")
        if not (amount.isascii() and amount.isdigit()):
            raise NotificationRejected("malformed", f"amount {amount!r} is not a whole number of fen")
        succeeded = code in _SUCCESS
        reason = "" if succeeded else _reason(params, "respMsg", code)
        notification_id = f"{query_id}:{txn_type}"
        if txn_type == "01":
            payment = ProviderState(
                AttemptStatus.SUCCEEDED if succeeded else AttemptStatus.FAILED,
                order_id,
                trade_no=query_id,
                amount_minor=int(amount),
                currency=self._currency(params),
                merchant_id=params.get("merId", ""),
                failure_reason=reason,
            )
            return Notification(NotificationKind.PAYMENT, notification_id, "", payment=payment)
        if params.get("merId") != self.config.mer_id:
            raise NotificationRejected("malformed", f"refund result for merchant {params.get('merId')!r}, not ours")
        refund = ProviderRefund(
            RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED,
            order_id,  # the refund's orderId is our out_refund_no; the caller finds the payment through it
            refund_no=query_id,
            amount_minor=int(amount),
            currency=self._currency(params),
            failure_reason=reason,
        )
        return Notification(NotificationKind.REFUND, notification_id, "", refund=refund)

    def acknowledge(self, accepted: bool) -> HttpReply:
        # UnionPay stops retrying on HTTP 200 and retries (a few times, with backoff) on anything else.
        if accepted:
            return HttpReply(200, {"content-type": "text/plain; charset=utf-8"}, b"ok")
        return HttpReply(500, {"content-type": "text/plain; charset=utf-8"}, b"error")


def _reason(params: Mapping[str, str], field: str, code: str) -> str:
    message = params.get(field, "").strip()
    return f"UnionPay: {message} ({code})" if message else f"UnionPay refused it (code {code})"
