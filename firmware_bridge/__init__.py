"""Device drivers: bytes from GPS receivers, CAN buses and barcode scanners into typed readings."""
