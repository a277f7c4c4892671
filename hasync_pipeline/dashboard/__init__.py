"""`ha-sync-ui`: the read-only status page over the audit tables (the seed's dashboard)."""
