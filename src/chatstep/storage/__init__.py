"""Files chatstep keeps: SQLite helpers, the response cache, the call history (private)."""
