"""The risk rules file (TOML, docs/risk.md): read and checked strictly, or refused with a message naming the rule.

Every key is known, every value in range, every rule name unique; a file that fails any check is refused whole —
at start-up the worker does not start, at a reload the rules in force stay (workers/risk/engine.py).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from workers.domain.currencies import minor_unit_exponent
from workers.domain.networks import IpNetwork, NetworkSet
from workers.domain.regions import is_region
from workers.domain.risk import ONE, OPERATIONS, PROBABILITY_PLACES, ZERO, Rule, RuleKind, RuleSet
from workers.domain.types import Method

MAX_RULES = 200
MAX_LIST_ENTRIES = 100_000
MAX_WINDOW_S = 31 * 86400
MAX_FILE_BYTES = 8 * 1024 * 1024
# Velocity sums are added up in Redis's Lua, whose numbers are doubles: exact up to 2**53 - 1.
MAX_SUM_MINOR = 2**53 - 1
# Rule names become metric labels and error metadata: short, plain, and operator-chosen.
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
FINGERPRINT = re.compile(r"[0-9a-f]{64}", re.ASCII)
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)

COMMON_KEYS = frozenset({"name", "kind", "probability", "operations", "methods", "description"})
KIND_KEYS: dict[RuleKind, tuple[frozenset[str], frozenset[str]]] = {  # kind → (required, optional)
    RuleKind.VELOCITY_COUNT: (frozenset({"window_s", "max_count"}), frozenset({"currency"})),
    RuleKind.VELOCITY_AMOUNT: (frozenset({"window_s", "max_amount_minor", "currency"}), frozenset()),
    RuleKind.AMOUNT_LIMIT: (frozenset({"max_amount_minor", "currency"}), frozenset()),
    RuleKind.NEW_ACCOUNT: (frozenset({"max_age_s", "max_amount_minor", "currency"}), frozenset()),
    RuleKind.BLOCKLIST: (frozenset(), frozenset({"users", "device_ids", "ips", "phone_fingerprints"})),
    RuleKind.REGION_MISMATCH: (frozenset({"regions"}), frozenset()),
}


class RulesError(ValueError):
    """The rules file cannot be used; the message says where and why."""


def load(path: Path) -> RuleSet:
    return parse(read(path), str(path))


def read(path: Path) -> bytes:
    """The file's bytes, read once: what is parsed is exactly what the audit trail's SHA-256 names."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise RulesError(f"{path}: cannot read the risk rules file ({error.strerror or error})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise RulesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return raw


def parse(raw: bytes, source: str = "rules") -> RuleSet:
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RulesError(f"{source}: not UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{source}: not valid TOML: {error}") from None
    try:
        return _rule_set(document)
    except RulesError as error:
        raise RulesError(f"{source}: {error}") from None


def _rule_set(document: dict[str, Any]) -> RuleSet:
    _known(document, frozenset({"version", "thresholds", "rules"}), "the file")
    if document.get("version") != 1:
        raise RulesError("version = 1 is required (the format of this file)")
    thresholds = document.get("thresholds")
    if not isinstance(thresholds, dict):
        raise RulesError("a [thresholds] table with review_at and deny_at is required")
    _known(thresholds, frozenset({"review_at", "deny_at"}), "[thresholds]")
    review_at = _probability(thresholds, "review_at", "[thresholds]")
    deny_at = _probability(thresholds, "deny_at", "[thresholds]")
    if not ZERO < review_at <= deny_at:
        raise RulesError(f"[thresholds]: need 0 < review_at <= deny_at <= 1, got {review_at} and {deny_at}")
    entries = document.get("rules", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise RulesError("rules must be an array of tables ([[rules]])")
    if len(entries) > MAX_RULES:
        raise RulesError(f"at most {MAX_RULES} rules, got {len(entries)}")
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        where = f"rules[{index}]" + (f" ({entry['name']!r})" if isinstance(entry.get("name"), str) else "")
        try:
            rules.append(_rule(entry))
        except RulesError as error:
            raise RulesError(f"{where}: {error}") from None
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RulesError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
    return RuleSet(review_at=review_at, deny_at=deny_at, rules=tuple(rules))


def _rule(entry: dict[str, Any]) -> Rule:
    name = entry.get("name")
    if not isinstance(name, str) or RULE_NAME.fullmatch(name) is None:
        raise RulesError("name must be 1-64 characters of a-z 0-9 _ . - (starting with a letter or digit)")
    try:
        kind = RuleKind(str(entry.get("kind")))
    except ValueError:
        raise RulesError(f"kind must be one of {', '.join(k.value for k in RuleKind)}") from None
    required, optional = KIND_KEYS[kind]
    _known(entry, COMMON_KEYS | required | optional, f"a {kind.value} rule")
    missing = sorted(required - entry.keys())
    if missing:
        raise RulesError(f"a {kind.value} rule needs {', '.join(missing)}")
    if "description" in entry and not isinstance(entry["description"], str):
        raise RulesError("description must be a string")
    values: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "probability": _probability(entry, "probability", "the rule"),
        "operations": frozenset(_strings(entry, "operations", OPERATIONS.__contains__, "CreatePayment or TopUp"))
        or frozenset(OPERATIONS),
        "methods": frozenset(Method(m) for m in _strings(entry, "methods", _is_method, "a method such as wallet")),
    }
    if "currency" in entry:
        values["currency"] = _currency(entry["currency"])
    for key, low, high in (
        ("window_s", 1, MAX_WINDOW_S),
        ("max_count", 0, 1_000_000),
        ("max_amount_minor", 0, MAX_SUM_MINOR),
        ("max_age_s", 1, 10 * 365 * 86400),
    ):
        if key in entry:
            values[key] = _integer(entry, key, low, high)
    if kind is RuleKind.BLOCKLIST:
        values.update(_blocklist(entry))
    if kind is RuleKind.REGION_MISMATCH:
        values["region_currencies"] = _regions(entry["regions"])
    return Rule(**values)


def _blocklist(entry: dict[str, Any]) -> dict[str, Any]:
    lists = {
        "users": frozenset(_strings(entry, "users", _is_identifier, "an identifier")),
        "device_ids": frozenset(_strings(entry, "device_ids", _is_identifier, "an identifier")),
        "networks": NetworkSet.of(_network(text) for text in _strings(entry, "ips", lambda _t: True, "")),
        "phone_fingerprints": frozenset(
            _strings(entry, "phone_fingerprints", _is_fingerprint, "64 lower-case hex digits (paygate risk phone)")
        ),
    }
    if not any(lists.values()):
        raise RulesError("a blocklist rule needs at least one of users, device_ids, ips, phone_fingerprints")
    return lists


def _regions(value: Any) -> Mapping[str, frozenset[str]]:
    if not isinstance(value, dict) or not value:
        raise RulesError('regions must be a table of region = ["CURRENCY", …], e.g. regions = { CN = ["CNY"] }')
    mapping: dict[str, frozenset[str]] = {}
    for region, currencies in value.items():
        if not is_region(region):
            raise RulesError(f"regions: {region!r} is not an ISO 3166-1 alpha-2 code (upper case, e.g. CN)")
        if not isinstance(currencies, list) or not currencies:
            raise RulesError(f"regions.{region} must be a non-empty list of currency codes")
        mapping[region] = frozenset(_currency(code) for code in currencies)
    return mapping


def _known(table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RulesError(f"unknown key(s) in {where}: {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _probability(table: dict[str, Any], key: str, where: str) -> Decimal:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RulesError(f"{where}: {key} is required: a number in [0, 1]")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise RulesError(f"{where}: {key} must be a number in [0, 1], got {value!r}") from None
    if not number.is_finite() or not ZERO <= number <= ONE:
        raise RulesError(f"{where}: {key} must be in [0, 1], got {value!r}")
    if -number.normalize().as_tuple().exponent > PROBABILITY_PLACES:  # type: ignore[operator]
        raise RulesError(f"{where}: {key} may have at most {PROBABILITY_PLACES} decimal places, got {value!r}")
    return number


def _integer(table: dict[str, Any], key: str, low: int, high: int) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RulesError(f"{key} must be a whole number in [{low}, {high}], got {value!r}")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or minor_unit_exponent(value) is None:
        raise RulesError(f"currency must be a supported ISO-4217 code such as CNY, got {value!r}")
    return value


def _strings(table: dict[str, Any], key: str, valid: Any, rule: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_LIST_ENTRIES:
        raise RulesError(f"{key} must be a list of at most {MAX_LIST_ENTRIES} strings")
    for item in value:
        if not isinstance(item, str) or not valid(item):
            shown = repr(item)[:40]
            raise RulesError(f"{key}: {shown} is not valid" + (f" (expected {rule})" if rule else ""))
    return value


def _network(text: str) -> IpNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise RulesError(f"ips: {text[:50]!r} is not an IP address or network ({error})") from None


def _is_method(text: str) -> bool:
    return text in {method.value for method in Method}


def _is_identifier(text: str) -> bool:
    return IDENTIFIER.fullmatch(text) is not None


def _is_fingerprint(text: str) -> bool:
    return FINGERPRINT.fullmatch(text) is not None
