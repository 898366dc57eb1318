"""Regimes: the hindsight calendar (weights only) and the detected regime (classifier)."""
