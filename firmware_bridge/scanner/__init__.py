"""Barcode scanners: serial lines in, `Scan` records out (SSCC, GTIN, GS1, courier tracking)."""
