-- resilience 0003: the number of the last event copied per provider.
--
-- Every entry of a provider's Redis event log carries its number (1, 2, 3, ...). Keeping the
-- last number copied lets the snapshot job tell when the capped log dropped events before
-- they were copied (a gap in the numbers) instead of losing them silently. NULL for cursors
-- written before this step: no gap can be told for them until the next copy.

ALTER TABLE resilience_event_cursors ADD COLUMN event_n bigint;
ALTER TABLE resilience_snapshots ADD COLUMN events_lost integer NOT NULL DEFAULT 0;
