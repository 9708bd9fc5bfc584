"""CAN: frames from any python-can interface or log, decoded by a DBC into COVESA VSS signals.

``decoder`` is pure (frames in, ``Signal`` out); ``mapping`` loads the per-vehicle TOML files;
``bus_driver`` does the I/O (live bus, recorded logs); ``gvret`` reads SavvyCAN's CSV logs.
Nothing here imports python-can or cantools until it is used.
"""

from firmware_bridge.can.mapping import Mapping, MappingEntry, load_mapping, shipped_names
from protocols.errors import MappingError

__all__ = ["Mapping", "MappingEntry", "MappingError", "load_mapping", "shipped_names"]
