"""The one exception tree every layer raises from, so a caller can catch by meaning.

``InputError`` is unusable input (a file, a setting, a message): its text names where. The CLI
turns it into a usage error and a non-zero exit; drivers and the collector count it and go on.
``LinkError`` is a device or network link that is down or broken: the owner reconnects.
"""

from __future__ import annotations


class DroplineError(Exception):
    """Base of every error Dropline raises on purpose."""


class InputError(DroplineError, ValueError):
    """Input that cannot be used; the message names the file, line and field (or the reason)."""


class ConfigError(InputError):
    """The configuration cannot be used; the message names the file and the field."""


class WireError(InputError):
    """A batch that cannot be accepted; the message is the counted reason."""


class DbcError(InputError):
    """A DBC file cantools cannot load; the message names the file."""


class MappingError(InputError):
    """A mapping file that cannot be used; the message names the file and the key."""


class LogFormatError(InputError):
    """A log file that cannot be read at all; the message names the file."""


class UsageError(InputError):
    """Command-line input the command cannot use; the message names the file, line and field."""


class LinkError(DroplineError):
    """A device or network link is down or broken; its owner reconnects."""


class DeviceError(LinkError):
    """The device is unreachable or its stream broke; the read loop reconnects."""


class TransportError(LinkError):
    """The link to the collector is down or broken; the uplink reconnects."""
