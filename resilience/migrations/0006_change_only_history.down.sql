-- Reverts 0006: one history row per target per snapshot again.
--
-- Every row a change-only snapshot left out is put back: a target's row is repeated, with
-- zero increments, in each later snapshot of its key prefix up to its next row (or up to a
-- keyframe that does not hold it, had its in_redis = false row been pruned); then the
-- in_redis = false rows go (before 0006 a vanished target simply had no row) and so do the
-- columns. The result is the history the earlier layout would have written.

DROP FUNCTION IF EXISTS model_compatibility_history_at(timestamptz);

WITH o AS (
    SELECT h.*, lead(h.snapshot_id) OVER (
        PARTITION BY h.key_prefix, h.provider_id, h.model_id ORDER BY h.snapshot_id) AS next_id
    FROM model_compatibility_history h
)
INSERT INTO model_compatibility_history (
    snapshot_id, key_prefix, taken_at, provider_id, model_id, state, is_blacklisted,
    blacklisted_until, error_delta, success_delta, error_count, success_count,
    raw_error_count, raw_success_count, consecutive_errors, trips, in_redis)
SELECT s.id, o.key_prefix, s.taken_at, o.provider_id, o.model_id, o.state, o.is_blacklisted,
    o.blacklisted_until, 0, 0, o.error_count, o.success_count, o.raw_error_count,
    o.raw_success_count, o.consecutive_errors, o.trips, true
FROM o
JOIN resilience_snapshots s
  ON s.key_prefix = o.key_prefix AND s.id > o.snapshot_id
 AND (o.next_id IS NULL OR s.id < o.next_id)
WHERE o.in_redis
  AND NOT EXISTS (SELECT 1 FROM resilience_snapshots k
                  WHERE k.key_prefix = o.key_prefix AND k.keyframe
                    AND k.id > o.snapshot_id AND k.id <= s.id);

DELETE FROM model_compatibility_history WHERE NOT in_redis;

ALTER TABLE model_compatibility_history DROP COLUMN in_redis;
ALTER TABLE model_compatibility_hints DROP COLUMN snapshot_digest;

DROP INDEX resilience_snapshots_keyframe_idx;
ALTER TABLE resilience_snapshots
    DROP COLUMN keyframe,
    DROP COLUMN history_rows,
    DROP COLUMN hint_rows;
