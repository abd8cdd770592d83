from __future__ import annotations

from exporter_api.security.passwords import hash_password, verify_password


def test_password_hashes() -> None:
    encoded = hash_password("demo")
    assert encoded.startswith("scrypt$")
    assert verify_password("demo", encoded)
    assert not verify_password("Demo", encoded)
    assert hash_password("demo") != encoded  # salted
    pbkdf2 = "pbkdf2_sha256$1000$c2FsdA$" + "x"
    assert not verify_password("demo", pbkdf2)
    assert not verify_password("demo", "md5$whatever")
