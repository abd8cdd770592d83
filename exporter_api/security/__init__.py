"""Security: credential vault (AES-GCM), JWT access tokens, refresh sessions, login throttle."""

from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, load_or_create_key
from exporter_api.security.passwords import hash_password, verify_password
from exporter_api.security.throttle import LoginThrottle
from exporter_api.security.tokens import AuthenticatedUser, IssuedTokens, TokenService
from exporter_api.security.vault import CredentialVault

__all__ = [
    "JWT_KEY_ENV",
    "VAULT_KEY_ENV",
    "AuthenticatedUser",
    "CredentialVault",
    "IssuedTokens",
    "LoginThrottle",
    "TokenService",
    "hash_password",
    "load_or_create_key",
    "verify_password",
]
