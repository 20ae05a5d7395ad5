"""The master key ring (runtime/master_key.py): sealing, binding, rotation, legacy Fernet blobs."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from runtime.errors import ConfigurationError
from runtime.master_key import ENVELOPE, MasterKeyRing, UnreadableBlob, derive_key
from runtime.settings import Settings


def _text(material: bytes) -> str:
    return base64.urlsafe_b64encode(material).decode()


def test_seal_opens_only_for_its_purpose_and_row() -> None:
    ring = MasterKeyRing(os.urandom(32))
    blob = ring.seal(b"whsec_x", purpose="webhook-secret", context="we_1")
    assert blob.startswith(ENVELOPE) and b"whsec_x" not in blob
    assert ring.open(blob, purpose="webhook-secret", context="we_1") == b"whsec_x"
    for purpose, context in [("api-key-secret", "we_1"), ("webhook-secret", "we_2"), ("webhook-secret", "")]:
        with pytest.raises(UnreadableBlob):
            ring.open(blob, purpose=purpose, context=context)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(UnreadableBlob):
        ring.open(tampered, purpose="webhook-secret", context="we_1")
    with pytest.raises(UnreadableBlob):
        ring.open(b"garbage", purpose="webhook-secret", context="we_1")
    assert ring.seal(b"x", purpose="p") != ring.seal(b"x", purpose="p")  # a fresh nonce each time


def test_rotation_previous_keys_open_and_rewrap_moves_to_the_current_key() -> None:
    old, new = os.urandom(32), os.urandom(32)
    blob = MasterKeyRing(old).seal(b"secret", purpose="p", context="r")
    rotated = MasterKeyRing(new, [old])
    assert rotated.needs_rewrap(blob)
    assert rotated.open(blob, purpose="p", context="r") == b"secret"
    rewrapped = rotated.rewrap(blob, purpose="p", context="r")
    assert not rotated.needs_rewrap(rewrapped)
    assert MasterKeyRing(new).open(rewrapped, purpose="p", context="r") == b"secret"
    with pytest.raises(UnreadableBlob, match="not in the ring"):
        MasterKeyRing(new).open(blob, purpose="p", context="r")
    assert rotated.current_key_id == MasterKeyRing(new).current_key_id != MasterKeyRing(old).current_key_id


def test_legacy_fernet_blobs_open_and_need_a_rewrap() -> None:
    material = os.urandom(32)
    legacy = Fernet(_text(material).encode()).encrypt(b"sk_old")
    ring = MasterKeyRing(os.urandom(32), [material])
    assert ring.needs_rewrap(legacy)
    assert ring.open(legacy, purpose="api-key-secret", context="key_1") == b"sk_old"
    assert not ring.needs_rewrap(ring.rewrap(legacy, purpose="api-key-secret", context="key_1"))
    with pytest.raises(UnreadableBlob):
        MasterKeyRing(os.urandom(32)).open(legacy, purpose="api-key-secret")


def test_load_from_settings_env_files_and_dev_file(tmp_path: Path) -> None:
    current, old = os.urandom(32), os.urandom(32)
    ring = MasterKeyRing.load(Settings(master_key=_text(current), master_key_previous=f" {_text(old)} ,"))
    assert ring.key_ids == [MasterKeyRing(current).current_key_id, MasterKeyRing(old).current_key_id]
    (tmp_path / "k").write_text(_text(current) + "\n")
    (tmp_path / "old").write_text(_text(old) + "\n\n")
    from_files = MasterKeyRing.load(
        Settings(master_key_file=str(tmp_path / "k"), master_key_previous_file=str(tmp_path / "old"))
    )
    assert from_files.key_ids == ring.key_ids
    dev = Settings(data_dir=tmp_path / "dev")
    assert MasterKeyRing.load(dev).current_key_id == MasterKeyRing.load(dev).current_key_id  # the file is kept
    # derive_key is unchanged for existing dev key files: HKDF of the current key.
    assert derive_key(dev, "page-token/v1") == MasterKeyRing.load(dev).derive_key("page-token/v1")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"master_key": "short"}, r"the master key \(PAYGATE_MASTER_KEY\) must be 32"),
        (
            {"master_key": _text(os.urandom(32)), "master_key_previous": "nope"},
            r"previous master key #1 \(PAYGATE_MASTER_KEY_PREVIOUS or _FILE\) must be",
        ),
        ({"master_key_file": "/nonexistent/key"}, "PAYGATE_MASTER_KEY_FILE: cannot read the key file"),
    ],
)
def test_bad_keys_are_clear_configuration_errors(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        MasterKeyRing.load(Settings(**changes))
    assert "short" not in str(caught.value) and "nope" not in str(caught.value)  # never the key itself


def test_outside_dev_mode_a_master_key_is_required(tmp_path: Path) -> None:
    settings = Settings.__new__(Settings)  # production settings refuse to build without one: skip that check
    object.__setattr__(settings, "master_key", Settings().master_key)
    for name in ("master_key_file", "master_key_previous_file"):
        object.__setattr__(settings, name, "")
    object.__setattr__(settings, "master_key_previous", Settings().master_key_previous)
    object.__setattr__(settings, "mode", "production")
    object.__setattr__(settings, "data_dir", tmp_path)
    with pytest.raises(ConfigurationError, match="required outside dev mode"):
        MasterKeyRing.load(settings)
    assert not (tmp_path / "master.key").exists()
