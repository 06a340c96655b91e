"""Entry point: ``python -m tessera.relay``."""

from tessera.common.server import main
from tessera.relay.service import build

if __name__ == "__main__":
    main("relay", build)
