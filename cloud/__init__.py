"""The collector: gRPC and MQTT ingest judging every record into one idempotent store (SQLite or
PostgreSQL), and the control tower over it (HTTP API, pages, tracking links, webhooks)."""
