-- The game event log: combat (hits, deaths) and match events (joins and leaves of
-- instance zones), appended by zones with COPY. Partitioned by time so old
-- events are dropped by detaching a partition (docs/OPERATIONS.md); rows land in
-- the default partition until an operator attaches ranged ones. Only a BRIN
-- index on time, so appends stay cheap.
CREATE TABLE game_events (
    at        timestamptz NOT NULL,
    world     text NOT NULL,
    zone      text NOT NULL,
    -- The match id of an instance zone, else ''.
    match     text NOT NULL,
    -- hit | death | join | leave
    kind      text NOT NULL,
    -- The acting player (the attacker of a hit, the victim of a death).
    player    text NOT NULL,
    -- The other entity (the target of a hit, the killer of a death), else 0.
    other     bigint NOT NULL,
    -- melee | ranged for a hit, else ''.
    weapon    text NOT NULL,
    amount    real NOT NULL,
    x         real NOT NULL,
    z         real NOT NULL
) PARTITION BY RANGE (at);
CREATE TABLE game_events_default PARTITION OF game_events DEFAULT;
CREATE INDEX game_events_at ON game_events USING brin (at);
