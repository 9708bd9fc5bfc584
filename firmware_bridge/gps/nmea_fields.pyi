# The interface of nmea_fields, compiled by Cython or run as plain Python. mypy reads this
# instead of the Cython pure-mode source, whose decorators (cython.ccall...) carry no types.

OK: int
NO_CHECKSUM: int
EMPTY: int
COMMENT: int
NOT_NMEA: int
BINARY: int
BAD_CHECKSUM: int
OVERLONG: int
TRUNCATED: int
MAX_SENTENCE: int
NAN: float

def frame(line: bytes, start: int = 0) -> tuple[int, str, int]: ...
def checksum(body: bytes) -> int: ...
def decimal(s: str) -> float: ...
def ddmm_to_degrees(s: str, max_degrees: int) -> float: ...
def hhmmss_to_seconds(s: str) -> float: ...
def days_from_civil(year: int, month: int, day: int) -> int: ...
def ddmmyy_to_days(s: str) -> int: ...
def small_int(s: str) -> int: ...

KIND_OTHER: int
KIND_GGA: int
KIND_RMC: int
KIND_GLL: int
KIND_GNS: int
KIND_VTG: int
KIND_GSA: int
KIND_ZDA: int
KIND_NONE: int

def sentence_kind(body: str) -> int: ...
def used_prns(fields: list[str], start: int, stop: int) -> int: ...
