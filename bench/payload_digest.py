"""Payload identity check: SHA-256 over every snapshot payload of a fixed-seed run.

Runs the zone tick benchmark's crowd (bench/zone_tick.py) through the real
simulation on a fixed seed and a synthetic clock, acknowledging three ticks
late, and hashes every payload in tick and client order. Two checkouts that
print the same digest sent the same bytes. To compare the encoder before and
after a change, run it in both:

    python bench/payload_digest.py --players 300 --ticks 60
    PYTHONPATH=<old>/wire:<old>/services:<old>/protos/gen python <old>/bench/payload_digest.py ...
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zone_tick import ACK_LAG_TICKS, Crowd

from tessera.common.config import Env
from tessera.zone import messages
from tessera.zone.config import ZoneConfig
from tessera.zone.simulation import Simulation


def digest(players: int, *, ticks: int, npcs: int, seed: int, every: int, cap: int) -> str:
    """Hex SHA-256 of all payloads of the run (and their lengths, as framing)."""
    half = 500.0
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_ZONE_BOUNDS": f"{-half},{-half},{half},{half}",
                "TESSERA_SNAPSHOT_EVERY": str(every),
                "TESSERA_AOI_CAP": str(cap),
            }
        )
    )
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, seed=seed)
    crowd = Crowd(players, half, np.random.default_rng(seed))
    sim.spawn_npcs(list(range(1, npcs + 1)))
    names = [f"bot-{i}" for i in range(players)]
    for i, name in enumerate(names):
        x, z = crowd.start[i]
        sim.add_player(entity_id=npcs + 1 + i, player_id=name, pos=(x, 0.0, z), team=0)
        sim.attach(name)
    clock = time.monotonic() + 1.0
    h = hashlib.sha256()
    pending: list[tuple[list[str], list[int], list[int]]] = []
    for t in range(ticks):
        rows = np.array([sim.ents.index[npcs + 1 + i] for i in range(players)], np.int64)
        msgs = crowd.messages(names, sim.ents.pos[rows][:, [0, 2]], cfg.dt)
        sim.submit_many(messages.input_batch(msgs)[0], clock + t * cfg.dt)
        frame = sim.step()
        for p in frame.batch.payloads:
            h.update(len(p).to_bytes(4, "little"))
            h.update(p)
        pending.append((frame.players, frame.batch.stream.tolist(), frame.batch.sequence.tolist()))
        if len(pending) > ACK_LAG_TICKS:
            players_then, streams, seqs = pending.pop(0)
            for player, stream, seq in zip(players_then, streams, seqs, strict=True):
                sim.ack(player, stream, seq)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=300)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--npcs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--snapshot-every", type=int, default=1)
    parser.add_argument("--cap", type=int, default=100)
    args = parser.parse_args()
    print(
        digest(
            args.players,
            ticks=args.ticks,
            npcs=args.npcs,
            seed=args.seed,
            every=args.snapshot_every,
            cap=args.cap,
        )
    )


if __name__ == "__main__":
    main()
