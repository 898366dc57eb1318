"""Walk-forward evaluation: origins, out-of-fold predictions, metrics versus the random walk."""
