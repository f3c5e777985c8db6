"""Client dialects: each translates its own request shape into the one ``GenerationJob``."""
