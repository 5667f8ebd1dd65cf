-- Drops the views of 0002; no table or row is touched.

DROP VIEW IF EXISTS problematic_models;
DROP VIEW IF EXISTS provider_success_rates;
