"""The Dagster layer: thin ops over the engine, audit and lease layers, built by factories from the pair
registry."""
