-- Applied only when the timescaledb extension is available (qsf logs which at start-up).
-- Time columns are int64 nanoseconds: chunks of one day (trades, signals) or a week (alerts).
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('trades',  'ts_event', chunk_time_interval => 86400000000000,  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('signals', 'ts_event', chunk_time_interval => 86400000000000,  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('alerts',  'ts_event', chunk_time_interval => 604800000000000, if_not_exists => TRUE, migrate_data => TRUE);
