"""Real engines for tests: a throwaway PostgreSQL server and an S3 API (moto's server mode)."""
