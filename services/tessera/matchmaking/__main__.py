"""Entry point: ``python -m tessera.matchmaking``."""

from tessera.common.server import main
from tessera.matchmaking.service import build

if __name__ == "__main__":
    main("matchmaking", build)
