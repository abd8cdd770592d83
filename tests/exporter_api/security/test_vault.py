from __future__ import annotations

import pytest

from exporter_api.errors import Unauthorized
from exporter_api.security.keys import KeyRing
from exporter_api.security.vault import CredentialVault
from exporter_api.store import Store
from tests.exporter_api.security.test_tokens import PASSWORD, _login, _service


async def test_password_is_encrypted_in_the_store(store: Store) -> None:
    tokens = _service(store)
    _, refresh, session_id = await _login(tokens)
    dump = repr(await store.fetch_all("SELECT * FROM session_credentials"))
    dump += repr(await store.fetch_all("SELECT * FROM sessions"))
    dump += repr(await store.fetch_all("SELECT * FROM refresh_tokens"))
    assert PASSWORD not in dump
    assert refresh not in dump
    # Bound to its session: the secret does not decrypt under another session id.
    row = await store.fetch_one("SELECT secret FROM session_credentials")
    assert row is not None
    vault = CredentialVault(store, b"v" * 32)
    assert vault.decrypt(session_id, row[0]) == PASSWORD
    with pytest.raises(Unauthorized):
        vault.decrypt("another-session", row[0])
    with pytest.raises(Unauthorized):
        CredentialVault(store, b"w" * 32).decrypt(session_id, row[0])


async def test_rotated_vault_key_still_opens_older_secrets(store: Store) -> None:
    old = CredentialVault(store, b"o" * 32)
    sealed_old = old.encrypt("sid-1", PASSWORD)
    rotated = CredentialVault(store, KeyRing((b"n" * 32, b"o" * 32)))
    sealed_new = rotated.encrypt("sid-1", PASSWORD)
    assert rotated.decrypt("sid-1", sealed_old) == PASSWORD
    assert rotated.decrypt("sid-1", sealed_new) == PASSWORD
    # New secrets are sealed with the first key only.
    assert CredentialVault(store, b"n" * 32).decrypt("sid-1", sealed_new) == PASSWORD
    with pytest.raises(Unauthorized):
        old.decrypt("sid-1", sealed_new)
    with pytest.raises(Unauthorized):
        rotated.decrypt("sid-1", "not base64!")
    with pytest.raises(ValueError, match="32 bytes"):
        CredentialVault(store, [b"n" * 32, b"short"])
