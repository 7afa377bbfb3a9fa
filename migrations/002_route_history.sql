-- perfproxy's own history: one row per route per minute (rollups written by
-- a later version; the schema lands first).
CREATE SCHEMA IF NOT EXISTS perfproxy;

CREATE TABLE IF NOT EXISTS perfproxy.route_minutes (
    minute      timestamptz NOT NULL,
    route       text        NOT NULL,
    requests    bigint      NOT NULL DEFAULT 0,
    errors      bigint      NOT NULL DEFAULT 0,
    slow        bigint      NOT NULL DEFAULT 0,
    p50_ms      real,
    p95_ms      real,
    p99_ms      real,
    max_ms      real,
    PRIMARY KEY (route, minute)          -- one route over a time range
);

-- All routes over a time range: rows arrive in time order, so a BRIN index
-- stays tiny and fast for range scans.
CREATE INDEX IF NOT EXISTS route_minutes_minute_brin
    ON perfproxy.route_minutes USING brin (minute);

-- Worst routes of a recent period.
CREATE INDEX IF NOT EXISTS route_minutes_minute_errors
    ON perfproxy.route_minutes (minute DESC, errors DESC);
