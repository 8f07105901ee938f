"""Ingest: manifests and dataset adapters -> validated, sharded, probed manifest rows."""
