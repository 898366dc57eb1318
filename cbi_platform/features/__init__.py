"""Feature engineering (polars): point-in-time drivers and horizon targets."""
