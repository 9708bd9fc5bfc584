"""The van simulator behind ``dropline sim``: a delivery day played through the real drivers
(NMEA on a pseudo-terminal, CAN on a python-can bus, scanner lines on a second pseudo-terminal)."""
