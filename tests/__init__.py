"""The test suite (see README: one shared demo run, a micro dataset, a real local Ray cluster)."""
