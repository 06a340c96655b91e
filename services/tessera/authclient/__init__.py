"""The auth client: what every Tessera service uses to trust auth.

Access-token verification (:mod:`.verifier`), bearer metadata (:mod:`.bearer`),
auth's public keys (:mod:`.keys`) and the revocation feed (:mod:`.store`). It
never imports the auth service (``tessera.auth``); the token formats are in
``tessera.wire``.
"""
