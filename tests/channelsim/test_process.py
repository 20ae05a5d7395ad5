"""The process: SIGTERM/SIGINT stop it cleanly, a restart keeps keys, orders and settings; the CLI drives it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

from tests.channelsim import clients
from tests.channelsim.conftest import REPO, start_simulator, stop_simulator
from tests.channelsim.signing import BEIJING


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "channelsim", "--data-dir", str(data_dir), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_restart_keeps_everything_and_the_cli_drives_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sim = start_simulator(data_dir, pay_after_ms=0)
    out = "A" + uuid.uuid4().hex[:20]
    made, _, _ = clients.alipay(
        sim, "alipay.trade.precreate", {"out_trade_no": out, "total_amount": "3.00", "subject": "x"}
    )
    assert made["code"] == "10000"
    assert sim.order("alipay", out)["status"] == "pending"  # manual mode: nothing pays it

    paid = cli(data_dir, "pay", "alipay", out)
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["status"] == "paid"
    listed = cli(data_dir, "orders", "alipay")
    assert listed.returncode == 0 and out in [o["out_trade_no"] for o in json.loads(listed.stdout)["orders"]]
    bill = cli(data_dir, "statement", "alipay", datetime.now(BEIJING).strftime("%Y-%m-%d"))
    assert bill.returncode == 0 and out in bill.stdout and "支付宝业务明细查询" in bill.stdout
    bad = cli(data_dir, "misbehave", "card", "--http-5xx", "1", "--callback", "duplicate", "forged")
    assert bad.returncode == 0 and json.loads(bad.stdout)["callback"] == ["duplicate", "forged"]
    assert cli(data_dir, "pay", "alipay", "no-such-order").returncode == 1
    merchant_before = json.loads((data_dir / "channel-sim" / "merchant.json").read_text())

    assert stop_simulator(sim) == 0
    assert not (data_dir / "channel-sim" / "listen").exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = cli(data_dir, "orders", "--url", f"http://127.0.0.1:{closed_port}")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr

    again = start_simulator(data_dir, pay_after_ms=0)
    try:
        merchant_after = again.merchant
        for provider in ("alipay", "wechatpay", "unionpay"):
            for key in ("merchant_private_key", "platform_public_key"):
                path = merchant_after[provider][key]
                assert Path(path).read_bytes() == Path(merchant_before[provider][key]).read_bytes()
        assert merchant_after["wechatpay"]["platform_serial_no"] == merchant_before["wechatpay"]["platform_serial_no"]
        assert merchant_after["alipay"]["app_id"] == merchant_before["alipay"]["app_id"]
        assert again.order("alipay", out)["status"] == "paid"
        assert again.misbehave("card")["http_5xx"] == 1
    finally:
        again.http.close()
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(15) == 0
