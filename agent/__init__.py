"""The van agent: a pure core of stages fed typed events in event time, and the shell that wires
drivers, time base, outbox, uplink and effects around it."""
