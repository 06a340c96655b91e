"""``make demo``: the whole Tessera system on one machine, a bot swarm, a live
dashboard and a picture of the world splitting and merging."""
