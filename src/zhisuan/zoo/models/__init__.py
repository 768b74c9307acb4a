"""One module per zoo model family; each exposes ``ENTRIES: list[ZooEntry]``."""
