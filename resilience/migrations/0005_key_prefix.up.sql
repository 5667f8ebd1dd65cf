-- resilience 0005: each key prefix (application) keeps its own history in a shared schema.
--
-- Before this step the key prefix was in no key of the history. A second application
-- snapshotting into the same schema merged its counters into the first one's rows (they
-- showed as counter resets) and skipped its own transitions (the event cursor was keyed by
-- provider only). From here key_prefix leads every key: the state rows, the history rows,
-- the transitions, the event cursors and the snapshots. Reports, prune and the CLI work on
-- one prefix unless asked for all.
--
-- Existing rows: before this step a schema could hold one application's history correctly,
-- so every existing row goes to the application that runs the upgrade: `resilience db
-- upgrade` sets resilience.key_prefix to its RESILIENCE_KEY_PREFIX for this step (applied by
-- hand without it: 'resilience', the default prefix). No row is deleted or changed otherwise.
--
-- resilience_snapshots.interval_seconds: the interval of the `snapshot --every` loop that
-- wrote the row (NULL for a one-shot snapshot), so a liveness check compares the age of the
-- newest snapshot with the interval the job really runs at.
--
-- Later steps that change the history (for example change-only rows) key it the same way:
-- (key_prefix, provider_id, model_id, ...).

CREATE FUNCTION pg_temp.resilience_prefix() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT coalesce(nullif(current_setting('resilience.key_prefix', true), ''), 'resilience') $$;

-- the views of 0002 aggregate over providers: re-created per prefix below
DROP VIEW IF EXISTS problematic_models;
DROP VIEW IF EXISTS provider_success_rates;

ALTER TABLE model_compatibility_hints ADD COLUMN key_prefix text;
UPDATE model_compatibility_hints SET key_prefix = pg_temp.resilience_prefix();
ALTER TABLE model_compatibility_hints
    ALTER COLUMN key_prefix SET NOT NULL,
    DROP CONSTRAINT model_compatibility_hints_pkey,
    ADD PRIMARY KEY (key_prefix, provider_id, model_id);

ALTER TABLE resilience_snapshots
    ADD COLUMN key_prefix text,
    ADD COLUMN interval_seconds double precision CHECK (interval_seconds > 0);
UPDATE resilience_snapshots SET key_prefix = pg_temp.resilience_prefix();
ALTER TABLE resilience_snapshots ALTER COLUMN key_prefix SET NOT NULL;
DROP INDEX resilience_snapshots_taken_at_idx;
CREATE INDEX resilience_snapshots_prefix_taken_at_idx ON resilience_snapshots (key_prefix, taken_at);

ALTER TABLE model_compatibility_history ADD COLUMN key_prefix text;
UPDATE model_compatibility_history SET key_prefix = pg_temp.resilience_prefix();
ALTER TABLE model_compatibility_history
    ALTER COLUMN key_prefix SET NOT NULL,
    DROP CONSTRAINT model_compatibility_history_pkey,
    ADD PRIMARY KEY (snapshot_id, key_prefix, provider_id, model_id);
DROP INDEX model_compatibility_history_taken_at_idx;
DROP INDEX model_compatibility_history_target_idx;
CREATE INDEX model_compatibility_history_prefix_taken_at_idx
    ON model_compatibility_history (key_prefix, taken_at);
CREATE INDEX model_compatibility_history_target_idx
    ON model_compatibility_history (key_prefix, provider_id, model_id, taken_at);

ALTER TABLE model_compatibility_transitions ADD COLUMN key_prefix text;
UPDATE model_compatibility_transitions SET key_prefix = pg_temp.resilience_prefix();
ALTER TABLE model_compatibility_transitions
    ALTER COLUMN key_prefix SET NOT NULL,
    DROP CONSTRAINT model_compatibility_transitions_pkey,
    ADD PRIMARY KEY (key_prefix, provider_id, event_ms, event_seq);
DROP INDEX model_compatibility_transitions_occurred_at_idx;
DROP INDEX model_compatibility_transitions_target_idx;
CREATE INDEX model_compatibility_transitions_prefix_occurred_at_idx
    ON model_compatibility_transitions (key_prefix, occurred_at);
CREATE INDEX model_compatibility_transitions_target_idx
    ON model_compatibility_transitions (key_prefix, provider_id, model_id, occurred_at);

ALTER TABLE resilience_event_cursors ADD COLUMN key_prefix text;
UPDATE resilience_event_cursors SET key_prefix = pg_temp.resilience_prefix();
ALTER TABLE resilience_event_cursors
    ALTER COLUMN key_prefix SET NOT NULL,
    DROP CONSTRAINT resilience_event_cursors_pkey,
    ADD PRIMARY KEY (key_prefix, provider_id);

CREATE VIEW provider_success_rates AS
SELECT key_prefix,
       provider_id,
       count(*)                                     AS models,
       sum(error_count)::bigint                     AS error_count,
       sum(success_count)::bigint                   AS success_count,
       CASE WHEN sum(error_count + success_count) > 0
            THEN round(sum(success_count)::numeric / sum(error_count + success_count), 4)
       END                                          AS success_rate,
       count(*) FILTER (WHERE is_blacklisted)       AS blacklisted_models
FROM model_compatibility_hints
GROUP BY key_prefix, provider_id;

CREATE VIEW problematic_models AS
SELECT key_prefix, provider_id, model_id, error_count, success_count,
       CASE WHEN error_count + success_count > 0
            THEN round(error_count::numeric / (error_count + success_count), 4)
       END AS error_rate,
       state, is_blacklisted, blacklisted_until, last_error_kind, last_error_time
FROM model_compatibility_hints
WHERE error_count > 0;

DROP FUNCTION pg_temp.resilience_prefix();
