-- Skill ratings per game mode, and the match results that changed them (a
-- result is applied once per match id). Matchmaking caches ratings in Redis.
CREATE TABLE ratings (
    mode       text NOT NULL,
    player     text NOT NULL,
    mu         double precision NOT NULL,
    sigma      double precision NOT NULL,
    -- Bumped on every change; the Redis cache never replaces a newer version.
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (mode, player)
);

CREATE TABLE match_results (
    match_id    text PRIMARY KEY,
    mode        text NOT NULL,
    -- Player ids per team, in the reported order, and each team's rank (0 = first).
    teams       jsonb NOT NULL,
    ranks       integer[] NOT NULL,
    reported_at timestamptz NOT NULL
);
