-- Persistent player data per world: where a player resumes, the entity's opaque
-- game data and its anti-cheat tallies. Zones load a row when a player joins the
-- world and write it back (logout, write-behind, retirement); game back ends read
-- and write it through auth's GetPlayerData/PutPlayerData. Redis checkpoints stay
-- the sub-second crash-recovery path.
CREATE TABLE player_data (
    world        text NOT NULL,
    player       text NOT NULL,
    x            double precision NOT NULL,
    y            double precision NOT NULL,
    z            double precision NOT NULL,
    yaw          double precision NOT NULL,
    health       double precision NOT NULL,
    blob         bytea NOT NULL,
    speed_clamps bigint NOT NULL,
    teleports    bigint NOT NULL,
    -- Optimistic concurrency: a zone writes only a higher version than the
    -- row's (the version travels with the entity through handoffs and
    -- checkpoints), the API only the version it read plus one.
    version      bigint NOT NULL CHECK (version > 0),
    written_by   text NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (world, player)
);
