-- Match history per player: one row per player of every recorded match result,
-- written in the transaction that records the result (match_results) and
-- changes the ratings. Read newest first per player (Matchmaker.ListMatchHistory).
CREATE TABLE match_players (
    -- Increasing: the newest-first order and the page token.
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    match_id     text NOT NULL REFERENCES match_results (match_id) ON DELETE CASCADE,
    player       text NOT NULL,
    mode         text NOT NULL,
    -- The player's team (its index in the result) and the role the reporter gave, else ''.
    team         integer NOT NULL,
    role         text NOT NULL,
    -- The team's rank (0 = first) and its outcome: win, loss, draw, or done
    -- (a one-team mode).
    rank         integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('win', 'loss', 'draw', 'done')),
    -- The rating before and after the result; NULL in a one-team mode (not rated).
    mu_before    double precision,
    sigma_before double precision,
    mu_after     double precision,
    sigma_after  double precision,
    -- When the match started, as reported (NULL when not reported), and ended
    -- (when its result was recorded).
    started_at   timestamptz,
    ended_at     timestamptz NOT NULL,
    UNIQUE (match_id, player)
);
CREATE INDEX match_players_player ON match_players (player, id);
