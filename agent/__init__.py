"""The van agent: a pure core fed typed events, and the shell that wires drivers, outbox and uplink."""
