"""Auth: accounts, sessions, signed access tokens, refresh rotation, revocation and
relay connect tokens; plus the verifier library every other service uses."""
