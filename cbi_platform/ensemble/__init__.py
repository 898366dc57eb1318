"""Combining out-of-fold predictions (meta-learner) and calibrating target zones (conformal)."""
