"""GNSS: NMEA 0183 from a serial receiver or a file, and gpsd's JSON stream, both to ``Fix``."""
