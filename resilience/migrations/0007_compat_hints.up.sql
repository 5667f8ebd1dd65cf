-- resilience 0007: the compatibility hints a target learned, beside its endpoint hint.
--
-- model_compatibility_hints gains (the seed's columns are unchanged):
--   compat_hints       the hints learned (parameters renamed or refused, features lacking,
--                      token limits), each in the text form of resilience.CompatHint.encode()
--                      ("kind=param_renamed&param=max_tokens&to=max_completion_tokens");
--                      empty when none
--   compat_learned_at  when those hints last changed in Redis
--   compat_message     the (redacted) message of the error that last taught a hint
-- Rows written before this step have no hints (none were stored in PostgreSQL).

ALTER TABLE model_compatibility_hints
    ADD COLUMN compat_hints text[] NOT NULL DEFAULT '{}',
    ADD COLUMN compat_learned_at timestamptz,
    ADD COLUMN compat_message text;
