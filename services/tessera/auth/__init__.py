"""Auth: accounts, sessions, signed access tokens, refresh rotation, revocation and
relay connect tokens. Other services trust and call it through ``tessera.authclient``."""
