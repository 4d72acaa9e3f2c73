"""One module per revision; each keeps its own copy of its DDL, never the current tables."""
