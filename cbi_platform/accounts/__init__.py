"""The buyer's own data (users, sessions, programmes, price alerts, digests): see `store`."""
