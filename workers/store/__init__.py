"""The owned tables' rows (docs/architecture.md, "Owners"): `records` for payments, refunds, transfers and wallet
history, `attempts` for the channel attempts of a payment. No other module queries those tables."""
