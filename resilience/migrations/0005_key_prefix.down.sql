-- Reverts 0005: the history goes back to one application per schema.
--
-- Refused (nothing changes) while the schema holds the history of several key prefixes:
-- the earlier layout cannot keep them apart, and merging them is the bug 0005 fixed. Delete
-- the other prefixes' rows first (DELETE FROM <each table> WHERE key_prefix <> '...'), or
-- stay on this version. With one prefix, no row is lost: only the column goes.

DO $$
DECLARE
    found text;
    n integer;
BEGIN
    SELECT string_agg(key_prefix, ', ' ORDER BY key_prefix), count(*) INTO found, n
    FROM (SELECT key_prefix FROM model_compatibility_hints
          UNION SELECT key_prefix FROM model_compatibility_history
          UNION SELECT key_prefix FROM model_compatibility_transitions
          UNION SELECT key_prefix FROM resilience_event_cursors
          UNION SELECT key_prefix FROM resilience_snapshots) AS p;
    IF n > 1 THEN
        RAISE EXCEPTION 'the history holds % key prefixes (%); before 0005 a schema keeps one: delete the other prefixes'' rows first, or stay on this version', n, found;
    END IF;
END
$$;

DROP VIEW IF EXISTS problematic_models;
DROP VIEW IF EXISTS provider_success_rates;

ALTER TABLE resilience_event_cursors DROP COLUMN key_prefix;
ALTER TABLE resilience_event_cursors ADD PRIMARY KEY (provider_id);

DROP INDEX model_compatibility_transitions_prefix_occurred_at_idx;
DROP INDEX model_compatibility_transitions_target_idx;
ALTER TABLE model_compatibility_transitions DROP COLUMN key_prefix;
ALTER TABLE model_compatibility_transitions ADD PRIMARY KEY (provider_id, event_ms, event_seq);
CREATE INDEX model_compatibility_transitions_occurred_at_idx
    ON model_compatibility_transitions (occurred_at);
CREATE INDEX model_compatibility_transitions_target_idx
    ON model_compatibility_transitions (provider_id, model_id, occurred_at);

DROP INDEX model_compatibility_history_prefix_taken_at_idx;
DROP INDEX model_compatibility_history_target_idx;
ALTER TABLE model_compatibility_history DROP COLUMN key_prefix;
ALTER TABLE model_compatibility_history ADD PRIMARY KEY (snapshot_id, provider_id, model_id);
CREATE INDEX model_compatibility_history_taken_at_idx ON model_compatibility_history (taken_at);
CREATE INDEX model_compatibility_history_target_idx
    ON model_compatibility_history (provider_id, model_id, taken_at);

DROP INDEX resilience_snapshots_prefix_taken_at_idx;
ALTER TABLE resilience_snapshots DROP COLUMN key_prefix, DROP COLUMN interval_seconds;
CREATE INDEX resilience_snapshots_taken_at_idx ON resilience_snapshots (taken_at);

ALTER TABLE model_compatibility_hints DROP COLUMN key_prefix;
ALTER TABLE model_compatibility_hints ADD PRIMARY KEY (provider_id, model_id);

CREATE VIEW provider_success_rates AS
SELECT provider_id,
       count(*)                                     AS models,
       sum(error_count)::bigint                     AS error_count,
       sum(success_count)::bigint                   AS success_count,
       CASE WHEN sum(error_count + success_count) > 0
            THEN round(sum(success_count)::numeric / sum(error_count + success_count), 4)
       END                                          AS success_rate,
       count(*) FILTER (WHERE is_blacklisted)       AS blacklisted_models
FROM model_compatibility_hints
GROUP BY provider_id;

CREATE VIEW problematic_models AS
SELECT provider_id, model_id, error_count, success_count,
       CASE WHEN error_count + success_count > 0
            THEN round(error_count::numeric / (error_count + success_count), 4)
       END AS error_rate,
       state, is_blacklisted, blacklisted_until, last_error_kind, last_error_time
FROM model_compatibility_hints
WHERE error_count > 0;
