-- Drops the camelCase (folded) columns of 0004; they only repeat other columns, so no data
-- is lost.

ALTER TABLE model_compatibility_hints
    DROP COLUMN IF EXISTS providerid,
    DROP COLUMN IF EXISTS modelid,
    DROP COLUMN IF EXISTS errorcount,
    DROP COLUMN IF EXISTS successcount,
    DROP COLUMN IF EXISTS isblacklisted,
    DROP COLUMN IF EXISTS lasterrortime,
    DROP COLUMN IF EXISTS lasterrormessage,
    DROP COLUMN IF EXISTS createdat,
    DROP COLUMN IF EXISTS updatedat;
