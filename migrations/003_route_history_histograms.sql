-- History merged across instances: each instance writes its own row per
-- route per minute, with the minute's latency histogram (HdrHistogram V2 +
-- DEFLATE), so any range and step merges exactly. The route "*" is the
-- instance's total.
ALTER TABLE perfproxy.route_minutes ADD COLUMN IF NOT EXISTS instance text NOT NULL DEFAULT '';
ALTER TABLE perfproxy.route_minutes ADD COLUMN IF NOT EXISTS histogram bytea;
ALTER TABLE perfproxy.route_minutes DROP CONSTRAINT IF EXISTS route_minutes_pkey;
ALTER TABLE perfproxy.route_minutes ADD PRIMARY KEY (route, minute, instance);
