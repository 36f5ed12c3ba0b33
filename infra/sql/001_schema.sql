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
