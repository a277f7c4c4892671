"""HA Sync: two-way sync of folder pairs between two servers, as a Dagster pipeline and a CLI."""
