-- Applied only when the timescaledb extension is available (qsf logs which at start-up);
-- every statement is idempotent, so start-ups can run it again.
-- Time columns are int64 nanoseconds: chunks of one day (trades, signals) or a week (alerts,
-- orders, fills, equity).
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('trades',  'ts_event', chunk_time_interval => 86400000000000,  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('signals', 'ts_event', chunk_time_interval => 86400000000000,  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('alerts',  'ts_event', chunk_time_interval => 604800000000000, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('orders',  'ts_event', chunk_time_interval => 604800000000000, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('fills',   'ts_event', chunk_time_interval => 604800000000000, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('equity',  'ts_event', chunk_time_interval => 604800000000000, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('pipeline_health', 'ts', chunk_time_interval => 86400000000000, if_not_exists => TRUE, migrate_data => TRUE);

-- Policies on integer time need "now" in the same unit.
CREATE OR REPLACE FUNCTION qsf_now_ns() RETURNS bigint LANGUAGE sql STABLE AS
$$ SELECT (extract(epoch FROM now()) * 1000000000)::bigint $$;
SELECT set_integer_now_func('trades',  'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('signals', 'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('alerts',  'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('orders',  'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('fills',   'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('equity',  'qsf_now_ns', replace_if_exists => TRUE);
SELECT set_integer_now_func('pipeline_health', 'qsf_now_ns', replace_if_exists => TRUE);

-- Compression: segments per instrument, ordered like the engine's total order.
DO $$
BEGIN
  IF NOT (SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'trades') THEN
    ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'source, key',
                            timescaledb.compress_orderby = 'ts_event, seq');
  END IF;
  IF NOT (SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'signals') THEN
    ALTER TABLE signals SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy, key, name',
                             timescaledb.compress_orderby = 'ts_event');
  END IF;
END $$;

-- Trades: compressed after 7 days, dropped after 90; signals: compressed after 7 days,
-- kept; alerts, orders, fills, equity: kept; pipeline_health: dropped after 30 days.
-- Change the numbers (nanoseconds) to taste.
SELECT add_compression_policy('trades',  compress_after => BIGINT '604800000000000', if_not_exists => TRUE);
SELECT add_compression_policy('signals', compress_after => BIGINT '604800000000000', if_not_exists => TRUE);
SELECT add_retention_policy('trades', drop_after => BIGINT '7776000000000000', if_not_exists => TRUE);
SELECT add_retention_policy('pipeline_health', drop_after => BIGINT '2592000000000000', if_not_exists => TRUE);
