-- Service level objectives' counts, one row per objective per instance per
-- minute, written with the route rollups and read back at start so that a
-- restart does not reset an error budget.
CREATE TABLE IF NOT EXISTS perfproxy.slo_minutes (
    minute    timestamptz NOT NULL,
    slo       text        NOT NULL,
    instance  text        NOT NULL,
    good      bigint      NOT NULL,
    bad       bigint      NOT NULL,
    PRIMARY KEY (slo, instance, minute)
);
