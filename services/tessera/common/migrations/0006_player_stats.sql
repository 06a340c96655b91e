-- Per-player combat stats per world, kept with the player data and written by the
-- same write-behind: kills (entities, players or NPCs, whose death a player's hit
-- caused in the zone that owns the player), deaths, hits dealt and hits taken.
ALTER TABLE player_data
    ADD COLUMN kills      bigint NOT NULL DEFAULT 0,
    ADD COLUMN deaths     bigint NOT NULL DEFAULT 0,
    ADD COLUMN hits_dealt bigint NOT NULL DEFAULT 0,
    ADD COLUMN hits_taken bigint NOT NULL DEFAULT 0;
