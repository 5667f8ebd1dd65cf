-- resilience 0004: the operators' checklist SQL runs as written.
--
-- The checklist of the system this project replaces writes the seed's camelCase names
-- unquoted (SELECT providerId, modelId, errorCount ... WHERE lastErrorTime < ...). PostgreSQL
-- folds unquoted identifiers to lower case, so those statements ask for providerid,
-- modelid, errorcount, ... while the table's columns are provider_id, model_id, ...
--
-- The choice: stored generated columns under the folded names, on the table itself.
--   * Every checklist statement runs unchanged against model_compatibility_hints, and so do
--     the snake_case names the runbook, the reports and the snapshot job use.
--   * DELETE ... WHERE lastErrorTime < ... AND errorCount = 0 deletes exactly the rows that
--     DELETE ... WHERE last_error_time < ... AND error_count = 0 deletes: it is one table
--     and each generated column always equals its source column.
--   * GENERATED ALWAYS columns cannot be written, so the snake_case columns stay the only
--     source of truth; an UPDATE of error_count updates errorcount in the same row write.
-- Rejected: renaming the table and putting a view with both spellings in its place. Simple
-- views are updatable, so the DELETE would also work, but every later migration adding a
-- column to the table would have to re-create the view (a view's column list is fixed when it
-- is created), and INSERT ... ON CONFLICT would have to name the table behind the view.
-- The cost of the choice: nine duplicated values per row (a few hundred bytes per target).
--
-- SELECT * shows both spellings; name the columns you want.

ALTER TABLE model_compatibility_hints
    ADD COLUMN providerid       text        GENERATED ALWAYS AS (provider_id) STORED,
    ADD COLUMN modelid          text        GENERATED ALWAYS AS (model_id) STORED,
    ADD COLUMN errorcount       bigint      GENERATED ALWAYS AS (error_count) STORED,
    ADD COLUMN successcount     bigint      GENERATED ALWAYS AS (success_count) STORED,
    ADD COLUMN isblacklisted    boolean     GENERATED ALWAYS AS (is_blacklisted) STORED,
    ADD COLUMN lasterrortime    timestamptz GENERATED ALWAYS AS (last_error_time) STORED,
    ADD COLUMN lasterrormessage text        GENERATED ALWAYS AS (last_error_message) STORED,
    ADD COLUMN createdat        timestamptz GENERATED ALWAYS AS (created_at) STORED,
    ADD COLUMN updatedat        timestamptz GENERATED ALWAYS AS (updated_at) STORED;
