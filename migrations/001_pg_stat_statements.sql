-- pg_stat_statements: where perfproxy reads slow queries from. The server
-- must also preload it: shared_preload_libraries = 'pg_stat_statements'
-- in postgresql.conf, then a restart.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
