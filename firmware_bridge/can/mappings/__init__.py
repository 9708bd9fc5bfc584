"""Shipped DBC -> COVESA VSS mappings, one TOML file per vehicle model (package data)."""
