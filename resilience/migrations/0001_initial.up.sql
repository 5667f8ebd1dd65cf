-- resilience 0001: current state, snapshot history and transitions.
--
-- model_compatibility_hints keeps the seed's columns (snake_case) so the operators' runbook
-- query works unchanged; error_count and success_count are lifetime totals that only grow
-- (deltas of the Redis counters, added the way Prometheus rate() treats counter resets).

CREATE TABLE model_compatibility_hints (
    provider_id         text        NOT NULL,
    model_id            text        NOT NULL,
    -- the seed's columns
    error_count         bigint      NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    success_count       bigint      NOT NULL DEFAULT 0 CHECK (success_count >= 0),
    is_blacklisted      boolean     NOT NULL DEFAULT false,
    last_error_time     timestamptz,
    last_error_message  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- what the breaker knows
    state               text        NOT NULL DEFAULT 'closed'
                        CHECK (state IN ('closed', 'open', 'half_open')),
    trips               integer     NOT NULL DEFAULT 0,
    consecutive_errors  integer     NOT NULL DEFAULT 0,
    blacklisted_until   timestamptz,
    last_error_kind     text,
    last_success_time   timestamptz,
    endpoint_hint       text,
    reason              text,
    manual              boolean     NOT NULL DEFAULT false,
    provider_blocked_until timestamptz,
    generation          bigint      NOT NULL DEFAULT 0,
    -- counter-reset bookkeeping: the Redis counters and entry creation time last seen
    raw_error_count     bigint      NOT NULL DEFAULT 0,
    raw_success_count   bigint      NOT NULL DEFAULT 0,
    redis_since         timestamptz,
    in_redis            boolean     NOT NULL DEFAULT true,
    PRIMARY KEY (provider_id, model_id)
);

CREATE INDEX model_compatibility_hints_error_count_idx
    ON model_compatibility_hints (error_count DESC);

-- One row per snapshot (the time axis of the history).
CREATE TABLE resilience_snapshots (
    id                  bigserial   PRIMARY KEY,
    taken_at            timestamptz NOT NULL DEFAULT now(),
    targets             integer     NOT NULL,
    transitions         integer     NOT NULL,
    duration_ms         integer
);

CREATE INDEX resilience_snapshots_taken_at_idx ON resilience_snapshots (taken_at);

-- One row per target per snapshot. error_delta / success_delta are the increments since the
-- previous snapshot (never negative); error_count / success_count the lifetime totals after it.
CREATE TABLE model_compatibility_history (
    snapshot_id         bigint      NOT NULL REFERENCES resilience_snapshots (id) ON DELETE CASCADE,
    taken_at            timestamptz NOT NULL,
    provider_id         text        NOT NULL,
    model_id            text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    is_blacklisted      boolean     NOT NULL,
    blacklisted_until   timestamptz,
    error_delta         bigint      NOT NULL CHECK (error_delta >= 0),
    success_delta       bigint      NOT NULL CHECK (success_delta >= 0),
    error_count         bigint      NOT NULL,
    success_count       bigint      NOT NULL,
    raw_error_count     bigint      NOT NULL,
    raw_success_count   bigint      NOT NULL,
    consecutive_errors  integer     NOT NULL,
    trips               integer     NOT NULL,
    PRIMARY KEY (snapshot_id, provider_id, model_id)
);

CREATE INDEX model_compatibility_history_taken_at_idx
    ON model_compatibility_history (taken_at);
CREATE INDEX model_compatibility_history_target_idx
    ON model_compatibility_history (provider_id, model_id, taken_at);

-- Every state change, copied once from the Redis event log. The Redis stream id
-- "<ms>-<seq>" is kept as two bigints so it sorts numerically; (provider_id, event_ms,
-- event_seq) is unique, which makes the copy idempotent.
CREATE TABLE model_compatibility_transitions (
    provider_id         text        NOT NULL,
    event_ms            bigint      NOT NULL,
    event_seq           bigint      NOT NULL,
    event_id            text        GENERATED ALWAYS AS (event_ms::text || '-' || event_seq::text) STORED,
    model_id            text,       -- NULL: a provider-wide block or unblock
    from_state          text        NOT NULL CHECK (from_state IN ('closed', 'open', 'half_open')),
    to_state            text        NOT NULL CHECK (to_state IN ('closed', 'open', 'half_open')),
    kind                text        NOT NULL,
    reason              text        NOT NULL DEFAULT '',
    generation          bigint      NOT NULL DEFAULT 0,
    occurred_at         timestamptz NOT NULL,
    open_until          timestamptz,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, event_ms, event_seq)
);

CREATE INDEX model_compatibility_transitions_occurred_at_idx
    ON model_compatibility_transitions (occurred_at);
CREATE INDEX model_compatibility_transitions_target_idx
    ON model_compatibility_transitions (provider_id, model_id, occurred_at);

-- Per provider, the newest Redis event id already copied. Written in the same transaction as
-- the transitions; prune never touches it, so old events still in the Redis stream are never
-- copied twice after their rows were pruned.
CREATE TABLE resilience_event_cursors (
    provider_id         text        PRIMARY KEY,
    event_ms            bigint      NOT NULL,
    event_seq           bigint      NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
