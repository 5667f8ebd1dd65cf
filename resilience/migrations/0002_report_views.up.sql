-- resilience 0002: views for ad-hoc operator queries (lifetime figures from the state rows).
-- Views only: rolling this step back never touches data.

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
