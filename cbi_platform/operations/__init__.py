"""Operating the platform: daily refresh, validation, monitors, alerts, retraining, replay."""
