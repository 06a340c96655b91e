"""What both ends of a wire share: formats, codecs and the shapes they carry.

UDP framing and sealing (:mod:`.packet`), link statistics (:mod:`.link`), the
snapshot layout and its decoder (:mod:`.snapshot`), the connect-token format
(:mod:`.connect_token`), the access-token format (:mod:`.access_token`), names
(:mod:`.names`) and rectangles (:mod:`.geometry`, their protobuf form in
:mod:`.bounds`). Services and the client SDK import it; it imports neither
(checked by import-linter, docs/ARCHITECTURE.md).
"""
