-- Reverts 0007: the learned compatibility hints leave PostgreSQL (Redis keeps them; the
-- next snapshot after an upgrade writes them again).

ALTER TABLE model_compatibility_hints
    DROP COLUMN compat_hints,
    DROP COLUMN compat_learned_at,
    DROP COLUMN compat_message;
