"""The auth client: what every Tessera service uses to trust auth.

Access-token verification (:mod:`.verifier`), bearer metadata (:mod:`.bearer`),
auth's public keys (:mod:`.keys`), the revocation feed (:mod:`.store`) and
connect-token opening with cached keys (:mod:`.connect`). It never imports the
auth service (``tessera.auth``); the token formats are in ``tessera.wire``.
"""
