"""Examples of the library at work, written against its public API only."""
