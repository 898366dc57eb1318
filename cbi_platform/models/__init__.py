"""The model zoo behind one small protocol (see `base.py`); the list of specs is data."""
