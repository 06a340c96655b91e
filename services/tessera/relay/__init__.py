"""The relay: encrypted UDP (and gRPC Play) client sessions routed to zones."""
