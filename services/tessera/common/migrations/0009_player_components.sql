-- The persisted components of a world's game module (docs/GAME.md), by name: a
-- JSON object of numbers, written by the zones' player-data write-behind.
ALTER TABLE player_data ADD COLUMN components jsonb NOT NULL DEFAULT '{}';
