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

-- 1-minute OHLC bars of trades, kept by TimescaleDB (a continuous aggregate, refreshed each
-- minute over the last hour; real time: the newest minutes come from the raw trades), and the
-- BTC/ETH spread per minute (log ratio of the bars' closes) over them.
CREATE MATERIALIZED VIEW IF NOT EXISTS trades_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(BIGINT '60000000000', ts_event) AS bucket, key,
       first(price, ts_event) AS open, max(price) AS high, min(price) AS low, last(price, ts_event) AS close,
       sum(qty) AS volume, count(*) AS trades
FROM trades GROUP BY 1, 2 WITH NO DATA;
SELECT add_continuous_aggregate_policy('trades_1m', start_offset => BIGINT '3600000000000',
                                       end_offset => BIGINT '60000000000', schedule_interval => INTERVAL '1 minute',
                                       if_not_exists => TRUE);
CREATE OR REPLACE VIEW spread_1m AS
SELECT b.bucket, ln(b.close / e.close) AS log_ratio
FROM trades_1m b JOIN trades_1m e ON e.bucket = b.bucket AND e.key = 'ETHUSDT'
WHERE b.key = 'BTCUSDT';
