"""Entry point: ``python -m tessera.auth``."""

from tessera.auth.service import build
from tessera.common.server import main

if __name__ == "__main__":
    main("auth", build)
