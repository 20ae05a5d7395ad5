"""Paygate workers: decode and validate calls, apply business rules, keep the double-entry ledger."""
