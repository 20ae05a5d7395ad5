"""A card processor with a Stripe-like JSON API and HMAC-signed webhooks: see provider.py."""

from workers.channels.card.config import CardConfig
from workers.channels.card.provider import CardProvider

__all__ = ["CardConfig", "CardProvider"]
