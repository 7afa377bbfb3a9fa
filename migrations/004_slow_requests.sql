-- Slow requests and what the database was doing while they ran: one row
-- per slow request per instance. `database` holds the backends seen, each
-- statement already normalised (no literal is ever written here).
CREATE TABLE IF NOT EXISTS perfproxy.slow_requests (
    at          timestamptz NOT NULL,
    instance    text        NOT NULL DEFAULT '',
    route       text        NOT NULL,
    status      integer     NOT NULL,
    latency_ms  real        NOT NULL,
    upstream_ms real,
    overhead_ms real        NOT NULL,
    trace_id    text,
    trace_sampled boolean   NOT NULL DEFAULT false,
    request_id  text        NOT NULL,
    client      text        NOT NULL,
    database    jsonb       NOT NULL DEFAULT '[]'
);

-- Rows arrive in time order: a BRIN index serves time ranges.
CREATE INDEX IF NOT EXISTS slow_requests_at_brin ON perfproxy.slow_requests USING brin (at);
