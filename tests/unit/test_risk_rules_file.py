"""The rules file is checked strictly (docs/risk.md): every mistake is refused with where and why."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from workers.domain.risk import RuleKind
from workers.risk import rules_file
from workers.risk.rules_file import RulesError

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "risk" / "rules.toml"
HEAD = "version = 1\n[thresholds]\nreview_at = 0.5\ndeny_at = 0.9\n"


def test_the_shipped_example_is_valid_and_uses_every_kind() -> None:
    rules = rules_file.load(SHIPPED)
    assert {rule.kind for rule in rules.rules} == set(RuleKind)
    assert (rules.review_at, rules.deny_at) == (Decimal("0.5"), Decimal("0.9"))


def rule(body: str) -> bytes:
    return (HEAD + '[[rules]]\nname = "r1"\n' + body).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"version = 1\n[thresholds\n", "not valid TOML"),
        (HEAD.replace("version = 1\n", "").encode(), "version = 1 is required"),
        (HEAD.replace("0.5", "0.95").encode(), "review_at <= deny_at"),
        (HEAD.replace("0.9", "1.5").encode(), "deny_at must be in [0, 1]"),
        (HEAD.replace("0.5", "0").encode(), "0 < review_at"),
        (HEAD.encode() + b"extra = 1\n", "unknown key(s) in [thresholds]: extra"),
        (rule('kind = "velocity_count"\nwindow_s = 60\nmax_cont = 3\nprobability = 0.5\n'), "rules[0] ('r1')"),
        (rule('kind = "velocity_count"\nwindow_s = 60\nmax_count = 3\nprobability = 1.2\n'), "probability"),
        (rule('kind = "velocity_count"\nwindow_s = 60\nmax_count = 3\nprobability = true\n'), "probability"),
        (rule('kind = "velocity_count"\nwindow_s = 0\nmax_count = 3\nprobability = 0.5\n'), "window_s"),
        (rule('kind = "velocity_amount"\nwindow_s = 60\nmax_amount_minor = 3\nprobability = 0.5\n'), "currency"),
        (rule('kind = "amount_limit"\ncurrency = "XXX1"\nmax_amount_minor = 1\nprobability = 0.5\n'), "ISO-4217"),
        (rule('kind = "blocklist"\nprobability = 1\n'), "at least one of"),
        (rule('kind = "blocklist"\nips = ["10.0.0.1/8"]\nprobability = 1\n'), "ips"),
        (rule('kind = "blocklist"\nphone_fingerprints = ["+8613800138000"]\nprobability = 1\n'), "64 lower-case"),
        (rule('kind = "blocklist"\nusers = ["a b"]\nprobability = 1\n'), "users"),
        (rule('kind = "region_mismatch"\nregions = { XX = ["CNY"] }\nprobability = 0.3\n'), "ISO 3166-1"),
        (rule('kind = "teleport"\nprobability = 0.3\n'), "kind must be one of"),
        (
            rule(
                'kind = "amount_limit"\nmethods = ["cash"]\ncurrency = "CNY"\nmax_amount_minor = 1\nprobability = 1\n'
            ),
            "methods",
        ),
        (
            rule('kind = "amount_limit"\ncurrency = "CNY"\nmax_amount_minor = 1\nprobability = 1\n')
            + b'[[rules]]\nname = "r1"\nkind = "blocklist"\nusers = ["u"]\nprobability = 1\n',
            "unique",
        ),
        (HEAD.replace("[thresholds]", '[[rules]]\nname = "Bad Name"\nkind = "blocklist"\n[thresholds]').encode(), ""),
    ],
)
def test_a_bad_file_is_refused_saying_where_and_why(raw: bytes, message: str) -> None:
    with pytest.raises(RulesError) as refused:
        rules_file.parse(raw, "rules.toml")
    assert str(refused.value).startswith("rules.toml: ")
    assert message in str(refused.value)


def test_probabilities_are_exact_decimals() -> None:
    parsed = rules_file.parse(rule('kind = "blocklist"\nusers = ["u"]\nprobability = 0.1\n'))
    assert parsed.rules[0].probability == Decimal("0.1")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        rules_file.load(tmp_path / "absent.toml")
