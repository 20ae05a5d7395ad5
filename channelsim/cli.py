"""`channel-sim`: run the simulator, or drive a running one through its control API.

Mount it in another CLI with `add_subcommands(subparsers)` (then call `args.func(args)`), or run it on its own with
`python -m channelsim`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from channelsim import CHANNELS
from channelsim.misbehave import CALLBACK_MODES, STATEMENT_FAULTS

DEFAULT_LISTEN = "127.0.0.1:8090"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("PAYGATE_DATA_DIR") or ".paygate")


class SettingError(ValueError):
    """A setting the simulator cannot start with: one line naming it, exit status 2."""


def _pay_after_ms(args: argparse.Namespace) -> int:
    if args.pay_after_ms is not None:
        value, source = int(args.pay_after_ms), "--pay-after-ms"
    else:
        text, source = os.environ.get("PAYGATE_SIM_PAY_AFTER_MS") or "300", "PAYGATE_SIM_PAY_AFTER_MS"
        value = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= value <= 86_400_000:
        raise SettingError(f"{source} must be a whole number of milliseconds in [0, 86400000] (0: only when told)")
    return value


def _listen(args: argparse.Namespace) -> str:
    host, _, port = str(args.listen).rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise SettingError(f"--listen (or PAYGATE_SIM_LISTEN) must be HOST:PORT, got {args.listen!r}")
    return str(args.listen)


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="simulator base URL (default: the running one's DATA_DIR/channel-sim/listen, "
        f"else http://{DEFAULT_LISTEN})",
    )
    parser.add_argument("--data-dir", default=argparse.SUPPRESS, help="where to find the running simulator's address")


def _misbehave_parser(actions: Any) -> None:
    bad = actions.add_parser("misbehave", help="make a channel misbehave (settings add up until --clear)")
    bad.add_argument("channel", choices=CHANNELS)
    bad.add_argument("--latency-ms", type=int, help="delay every answer by N ms")
    bad.add_argument(
        "--timeout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="process requests but hold the answer until the client gives up (at most 60 s)",
    )
    bad.add_argument("--http-5xx", type=int, metavar="N", help="the next N calls answer 5xx")
    bad.add_argument(
        "--decline",
        metavar="CODE",
        help="decline the next payment with CODE (UnionPay 03/04/05: answer the next call with that respCode)",
    )
    bad.add_argument(
        "--callback",
        nargs="+",
        action="extend",
        metavar="MODE",
        help=f"callback modes: {', '.join(CALLBACK_MODES)} (delay_ms=N sets the delay)",
    )
    bad.add_argument(
        "--statement",
        nargs="+",
        action="extend",
        metavar="FAULT",
        help=f"statement faults: {', '.join(STATEMENT_FAULTS)}",
    )
    bad.add_argument("--clear", action="store_true", help="clear this channel's misbehaviour first")
    _url_option(bad)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the channel-sim options and actions to `parser`."""
    parser.add_argument(
        "--listen",
        default=os.environ.get("PAYGATE_SIM_LISTEN", DEFAULT_LISTEN),
        help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    parser.add_argument("--data-dir", help="data directory (default ./.paygate, env PAYGATE_DATA_DIR)")
    parser.add_argument(
        "--pay-after-ms",
        type=int,
        help="pay new orders after N ms; 0 = manual mode (default env PAYGATE_SIM_PAY_AFTER_MS or 300)",
    )
    actions = parser.add_subparsers(dest="sim_action", metavar="ACTION")
    for name, text in (
        ("pay", "pay a pending order now"),
        ("fail", "fail a pending order"),
        ("abandon", "the buyer walks away: never pay it automatically"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("channel", choices=CHANNELS)
        action.add_argument("out_trade_no", help="the merchant's order number (card: the reference)")
        if name == "fail":
            action.add_argument("--code", help="failure/decline code to report")
        _url_option(action)
    _misbehave_parser(actions)
    statement = actions.add_parser("statement", help="print a channel's bill of a day, in the provider's format")
    statement.add_argument("channel", choices=CHANNELS)
    statement.add_argument("date", help="YYYY-MM-DD (Asia/Shanghai days; card: UTC days)")
    _url_option(statement)
    orders = actions.add_parser("orders", help="list orders with status, refunds and notification counts")
    orders.add_argument("channel", nargs="?", choices=CHANNELS)
    orders.add_argument("--limit", type=int, default=50)
    _url_option(orders)
    notes = actions.add_parser("notifications", help="the notification delivery log")
    notes.add_argument("channel", nargs="?", choices=CHANNELS)
    notes.add_argument("--out-trade-no")
    _url_option(notes)
    reset = actions.add_parser("reset", help="clear every channel's misbehaviour")
    _url_option(reset)
    parser.set_defaults(func=run)


def add_subcommands(subparsers: Any) -> None:
    """Register `channel-sim` on an argparse subparsers object (e.g. under `paygate`)."""
    parser = subparsers.add_parser(
        "channel-sim",
        help="run or drive the payment-provider simulator",
        description="Payment-provider simulator: Alipay, WeChat Pay, UnionPay, card.",
    )
    configure(parser)


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    listen_file = _data_dir(args) / "channel-sim" / "listen"
    if listen_file.exists():
        return f"http://{listen_file.read_text().strip()}"
    return f"http://{DEFAULT_LISTEN}"


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    action = args.sim_action
    if action in ("pay", "fail", "abandon"):
        body = {"code": args.code} if action == "fail" and args.code else {}
        return "POST", f"/control/orders/{args.channel}/{args.out_trade_no}/{action}", body, {}
    if action == "misbehave":
        patch: dict[str, Any] = {"clear": True} if args.clear else {}
        for key, value in (
            ("latency_ms", args.latency_ms),
            ("timeout", args.timeout),
            ("http_5xx", args.http_5xx),
            ("decline", args.decline),
            ("callback", args.callback),
            ("statement", args.statement),
        ):
            if value is not None:
                patch[key] = value
        return "POST", f"/control/misbehave/{args.channel}", patch, {}
    if action == "statement":
        return "GET", "/control/statement", None, {"channel": args.channel, "date": args.date}
    if action == "orders":
        query = {"limit": str(args.limit), **({"channel": args.channel} if args.channel else {})}
        return "GET", "/control/orders", None, query
    if action == "notifications":
        query = {k: v for k, v in (("channel", args.channel), ("out_trade_no", args.out_trade_no)) if v}
        return "GET", "/control/notifications", None, query
    return "POST", "/control/reset", {}, {}


def _control(args: argparse.Namespace) -> int:
    method, path, body, query = _request(args)
    url = _base_url(args) + path
    try:
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            response = client.request(method, url, json=body, params=query)
    except httpx.HTTPError as exc:
        print(f"channel-sim: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    if response.headers.get("content-type", "").startswith("application/json"):
        text = json.dumps(response.json(), ensure_ascii=False, indent=2)
    else:
        text = response.text
    print(text.rstrip("\n"), file=sys.stdout if response.is_success else sys.stderr)
    return 0 if response.is_success else 1


async def _serve_until_signalled(listen: str, data_dir: Path, pay_after_ms: int) -> None:
    from channelsim.server import serve  # noqa: PLC0415 - the control actions do not need the server's imports

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(listen, data_dir, pay_after_ms=pay_after_ms, stop=stop)


def run(args: argparse.Namespace) -> int:
    if args.sim_action is not None:
        return _control(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listen, pay_after_ms = _listen(args), _pay_after_ms(args)
    except SettingError as exc:
        print(f"channel-sim: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(listen, _data_dir(args), pay_after_ms))
    except (ValueError, OSError) as exc:
        print(f"channel-sim: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="channel-sim", description="Payment-provider simulator")
    configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
