"""The collector: gRPC and MQTT ingest into one idempotent store, and what it exports."""
