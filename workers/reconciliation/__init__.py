"""Reconciliation: a provider's daily statement against our settled records (docs/reconciliation.md).

- `match`: the pure comparison (statement lines and our records in, the differences out);
- `fetch`: the provider's day and its statement, through the channel's own HTTP client and provider module;
- `run`: one reconciliation of one channel and day, stored; and the operator's correction of one item;
- `report`: the summary and items as text or JSON; `metrics`: the item counts for the stack's /metrics.
"""
