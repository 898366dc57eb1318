"""Market data: the canonical schema, the sources (simulator, files, BigQuery) and validation."""
