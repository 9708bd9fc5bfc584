"""The shared vocabulary, the bottom layer: record types, reject counters, one exception tree,
the wire (protobuf schema, batch segments, the compacted track), signed envelopes, MQTT topics."""
