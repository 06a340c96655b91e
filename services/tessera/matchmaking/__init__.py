"""Matchmaking: tickets for players and parties, skill- and region-aware matching,
atomic claims in Redis shared by several replicas, assignment to a zone or instance."""
