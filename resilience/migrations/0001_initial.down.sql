-- resilience: destroys-data
-- Drops every table of 0001, with the history in them. The migration runner refuses to run
-- this step unless asked to drop data (resilience db downgrade --to 0 --drop-data).

DROP TABLE IF EXISTS resilience_event_cursors;
DROP TABLE IF EXISTS model_compatibility_transitions;
DROP TABLE IF EXISTS model_compatibility_history;
DROP TABLE IF EXISTS resilience_snapshots;
DROP TABLE IF EXISTS model_compatibility_hints;
