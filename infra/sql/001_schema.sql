-- QuantStream tables (PostgreSQL; TimescaleDB features are added by 002 when present).
-- Times are int64 UTC nanoseconds, as in the Arrow schemas; natural keys make every write
-- idempotent: a re-delivered batch inserts nothing new (INSERT ... ON CONFLICT DO NOTHING).

CREATE TABLE IF NOT EXISTS trades (
    ts_event        bigint           NOT NULL,
    ts_recv         bigint           NOT NULL,
    source          text             NOT NULL,
    key             text             NOT NULL,
    seq             bigint           NOT NULL,
    price           double precision NOT NULL,
    qty             double precision NOT NULL,
    is_buyer_maker  boolean          NOT NULL,
    PRIMARY KEY (source, key, seq, ts_event)
);

CREATE TABLE IF NOT EXISTS signals (
    ts_event  bigint           NOT NULL,
    ts_recv   bigint           NOT NULL,
    source    text             NOT NULL,
    key       text             NOT NULL,
    seq       bigint           NOT NULL,
    strategy  text             NOT NULL,
    name      text             NOT NULL,
    value     double precision,
    attrs     text,
    PRIMARY KEY (strategy, key, name, ts_event)
);

CREATE TABLE IF NOT EXISTS alerts (
    ts_event   bigint NOT NULL,
    ts_recv    bigint NOT NULL,
    source     text   NOT NULL,
    key        text   NOT NULL,
    seq        bigint NOT NULL,
    strategy   text   NOT NULL,
    name       text   NOT NULL,
    severity   text   NOT NULL,
    text       text   NOT NULL,
    dedup_key  text   NOT NULL,
    PRIMARY KEY (dedup_key, ts_event)
);

-- Paper trading (qsf process with a strategy that orders): the simulator's order status
-- changes, fills and equity samples. A replay after a crash reproduces each row with the same
-- key (seq is the strategy's output sequence, kept in the --state snapshot).
CREATE TABLE IF NOT EXISTS orders (
    ts_event  bigint           NOT NULL,
    ts_recv   bigint           NOT NULL,
    source    text             NOT NULL,
    key       text             NOT NULL,
    seq       bigint           NOT NULL,
    strategy  text             NOT NULL,
    order_id  bigint           NOT NULL,
    qty       double precision NOT NULL,
    price     double precision,
    tag       text             NOT NULL,
    status    text             NOT NULL,
    filled    double precision NOT NULL,
    PRIMARY KEY (strategy, order_id, ts_event, seq)
);

CREATE TABLE IF NOT EXISTS fills (
    ts_event   bigint           NOT NULL,
    ts_recv    bigint           NOT NULL,
    source     text             NOT NULL,
    key        text             NOT NULL,
    seq        bigint           NOT NULL,
    strategy   text             NOT NULL,
    order_id   bigint           NOT NULL,
    qty        double precision NOT NULL,
    price      double precision NOT NULL,
    fee        double precision NOT NULL,
    liquidity  text             NOT NULL,
    PRIMARY KEY (strategy, order_id, ts_event, seq)
);

-- positions: the non-zero positions as a JSON object {"BTCUSDT": 0.5, ...}
CREATE TABLE IF NOT EXISTS equity (
    ts_event   bigint           NOT NULL,
    ts_recv    bigint           NOT NULL,
    source     text             NOT NULL,
    key        text             NOT NULL,
    seq        bigint           NOT NULL,
    strategy   text             NOT NULL,
    cash       double precision NOT NULL,
    equity     double precision NOT NULL,
    positions  jsonb,
    PRIMARY KEY (strategy, ts_event)
);

-- Pipeline health (qsframework.live.health): each qsf process run with --sink timescale
-- writes one row per --health-interval (2 s by default) of wall time, and one when it stops.
-- ts, last_commit: UTC ns; events: processed in the interval (they add up to the run's
-- processed events); consumer_lag: records between what was consumed and the log ends,
-- summed over the assigned partitions; latency: ts_recv -> the sinks hold the event, over the
-- interval's events (null when none); dlq_by_reason: dead letters of the interval by reason
-- class, e.g. {"malformed JSON": 2, "late": 1} (dlq is their sum).
CREATE TABLE IF NOT EXISTS pipeline_health (
    ts              bigint           NOT NULL,
    group_id        text             NOT NULL,
    processor       text             NOT NULL,
    strategy        text             NOT NULL,
    interval_s      double precision NOT NULL,
    events          bigint           NOT NULL,
    events_per_s    double precision NOT NULL,
    consumer_lag    bigint           NOT NULL,
    latency_ms_p50  double precision,
    latency_ms_p99  double precision,
    dlq             bigint           NOT NULL,
    dlq_by_reason   jsonb            NOT NULL,
    last_commit     bigint,
    PRIMARY KEY (group_id, processor, ts)
);
