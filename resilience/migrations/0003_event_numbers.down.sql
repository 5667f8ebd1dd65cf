-- Drops the event numbers of 0003; cursors and snapshots themselves stay.

ALTER TABLE resilience_snapshots DROP COLUMN IF EXISTS events_lost;
ALTER TABLE resilience_event_cursors DROP COLUMN IF EXISTS event_n;
