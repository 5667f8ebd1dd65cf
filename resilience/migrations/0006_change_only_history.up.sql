-- resilience 0006: history that grows with change, not with time.
--
-- Before this step every snapshot wrote one model_compatibility_history row per target,
-- changed or not (100,000 rows per snapshot at 100k targets, 144 million a day at --every 60).
-- From here a snapshot writes a history row only for a target whose history row would differ
-- from its previous one (an increment, the raw counters, state, blacklist and its end,
-- consecutive errors, trips), and one row per target in a keyframe: the first snapshot of a
-- key prefix, then the first one RESILIENCE_SNAPSHOT_KEYFRAME_SECONDS (default a day) after
-- the previous keyframe (resilience_snapshots.keyframe).
--
-- Reading the history:
--   * Sums of error_delta / success_delta over any period are unchanged: the rows left out
--     are exactly the ones with zero increments.
--   * The value of a target at a time T is its newest row at or before T; a keyframe at or
--     before T bounds how far back to look (model_compatibility_history_at(T) below does it).
--   * A target that vanishes from Redis (idle TTL, flush) gets one row with in_redis = false
--     (state closed, zero increments): "absent" can no longer be told from "unchanged".
-- Key: (key_prefix, provider_id, model_id, snapshot_id) as 0005 keys the history; snapshot
-- ids order the snapshots of one key prefix (they are taken under its advisory lock).
--
-- Existing rows (a history written one row per target per snapshot):
--   1. keyframes: per key prefix the oldest snapshot, then the first one at least a day after
--      the previous keyframe (the default interval);
--   2. a target present in one snapshot and absent from the next gets its in_redis = false
--      row in that next snapshot;
--   3. rows of other snapshots equal to the target's previous row, with zero increments, are
--      deleted.
-- Nothing is lost: each deleted row is a copy of the row before it with a later snapshot id.
-- The down step puts every one of them back and removes the in_redis = false rows.
--
-- model_compatibility_hints: a snapshot upserts only the rows that change, so updated_at is
-- now when the row last changed (it was the time of the last snapshot). snapshot_digest: an
-- 8-byte digest of what the snapshot read for the target, so the next one sends PostgreSQL
-- only the targets whose digest differs (NULL: compare in full, as after this step).
--
-- resilience_snapshots.history_rows / hint_rows: rows each snapshot wrote (NULL before).

ALTER TABLE resilience_snapshots
    ADD COLUMN keyframe boolean NOT NULL DEFAULT false,
    ADD COLUMN history_rows integer,
    ADD COLUMN hint_rows integer;
CREATE INDEX resilience_snapshots_keyframe_idx
    ON resilience_snapshots (key_prefix, taken_at) WHERE keyframe;

ALTER TABLE model_compatibility_history ADD COLUMN in_redis boolean NOT NULL DEFAULT true;
ALTER TABLE model_compatibility_hints ADD COLUMN snapshot_digest bytea;

-- 1. keyframes
DO $$
DECLARE
    r record;
    prefix text := NULL;
    last_at timestamptz;
BEGIN
    FOR r IN SELECT id, key_prefix, taken_at FROM resilience_snapshots ORDER BY key_prefix, id LOOP
        IF prefix IS DISTINCT FROM r.key_prefix OR r.taken_at >= last_at + interval '1 day' THEN
            UPDATE resilience_snapshots SET keyframe = true WHERE id = r.id;
            prefix := r.key_prefix;
            last_at := r.taken_at;
        END IF;
    END LOOP;
END
$$;

-- 2. targets gone from one snapshot to the next
WITH seq AS (
    SELECT id, key_prefix, lead(id) OVER w AS next_id, lead(taken_at) OVER w AS next_at
    FROM resilience_snapshots
    WINDOW w AS (PARTITION BY key_prefix ORDER BY id)
)
INSERT INTO model_compatibility_history (
    snapshot_id, key_prefix, taken_at, provider_id, model_id, state, is_blacklisted,
    blacklisted_until, error_delta, success_delta, error_count, success_count,
    raw_error_count, raw_success_count, consecutive_errors, trips, in_redis)
SELECT s.next_id, h.key_prefix, s.next_at, h.provider_id, h.model_id, 'closed', false, NULL,
    0, 0, h.error_count, h.success_count, h.raw_error_count, h.raw_success_count, 0, h.trips,
    false
FROM model_compatibility_history h
JOIN seq s ON s.id = h.snapshot_id AND s.key_prefix = h.key_prefix
WHERE s.next_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM model_compatibility_history x
                  WHERE x.snapshot_id = s.next_id AND x.key_prefix = h.key_prefix
                    AND x.provider_id = h.provider_id AND x.model_id = h.model_id);

-- 3. rows that repeat the previous one
DELETE FROM model_compatibility_history h
USING (
    SELECT snapshot_id, key_prefix, provider_id, model_id,
           lag(snapshot_id) OVER w IS NOT NULL
           AND ROW(state, is_blacklisted, blacklisted_until, error_count, success_count,
                   raw_error_count, raw_success_count, consecutive_errors, trips, in_redis)
               IS NOT DISTINCT FROM
               lag(ROW(state, is_blacklisted, blacklisted_until, error_count, success_count,
                       raw_error_count, raw_success_count, consecutive_errors, trips, in_redis))
               OVER w AS same,
           error_delta = 0 AND success_delta = 0 AS idle
    FROM model_compatibility_history
    WINDOW w AS (PARTITION BY key_prefix, provider_id, model_id ORDER BY snapshot_id)
) AS p, resilience_snapshots s
WHERE p.same AND p.idle AND NOT s.keyframe AND s.id = p.snapshot_id
  AND h.snapshot_id = p.snapshot_id AND h.key_prefix = p.key_prefix
  AND h.provider_id = p.provider_id AND h.model_id = p.model_id;

-- Every target's history row as of `at`: its newest row at or before `at`, looking back no
-- further than the newest keyframe at or before `at` (per key prefix); targets that had
-- vanished from Redis by then are left out. The value a report window starts from.
CREATE FUNCTION model_compatibility_history_at(at timestamptz)
RETURNS SETOF model_compatibility_history
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM (
        SELECT DISTINCT ON (h.key_prefix, h.provider_id, h.model_id) h.*
        FROM model_compatibility_history h
        JOIN (SELECT key_prefix, max(taken_at) AS since FROM resilience_snapshots
              WHERE keyframe AND taken_at <= at GROUP BY key_prefix) k
          ON k.key_prefix = h.key_prefix AND h.taken_at >= k.since
        WHERE h.taken_at <= at
        ORDER BY h.key_prefix, h.provider_id, h.model_id, h.snapshot_id DESC
    ) AS newest
    WHERE in_redis
$$;
