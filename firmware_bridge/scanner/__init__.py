"""Barcode scanners: serial lines in, :class:`agent.records.Scan` out (SSCC, GTIN, GS1, courier tracking)."""
