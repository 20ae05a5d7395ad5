"""The card vault: card numbers kept envelope-encrypted, used through opaque owner-scoped tokens
(docs/security.md, "Card and personal data")."""
