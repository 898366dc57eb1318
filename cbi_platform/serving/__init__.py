"""What the buyer sees: the forecast record, its append-only history, the API and page."""
