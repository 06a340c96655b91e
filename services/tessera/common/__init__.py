"""Runtime shared by every Tessera service: configuration, logging, gRPC bootstrap,
metrics, Redis access and local process management."""
