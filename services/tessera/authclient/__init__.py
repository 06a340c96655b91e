"""The auth client: what every Tessera service uses to trust and call auth.

Access-token verification (:mod:`.verifier`), bearer metadata (:mod:`.bearer`),
auth's public keys (:mod:`.keys`), the revocation feed (:mod:`.store`),
connect-token opening with cached keys (:mod:`.connect`) and the
service-credential client that asks auth for connect tokens (:mod:`.issuer`).
It never imports the auth service (``tessera.auth``); the token formats are in
``tessera.wire``.
"""
