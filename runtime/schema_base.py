"""What every table module of the schema shares: the one MetaData, its naming convention, text and id sizes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
# MySQL/MariaDB compare text case-insensitively by default; identifiers are case-sensitive (docs/api.md).
BINARY_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

ID_LENGTH = 40  # prefix + 26-character sortable id, with room to spare
NAME_LENGTH = 64  # user ids, order ids, key owners
