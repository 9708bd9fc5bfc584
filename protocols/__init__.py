"""Wire formats: the protobuf schema, the batch framing and the MQTT topic scheme."""
