"""Procurement: from the forecast distribution to a buy/wait schedule, backtested with no
look-ahead (see `contract.py` for the frames every part exchanges)."""
