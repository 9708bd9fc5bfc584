# mypy: disable-error-code="untyped-decorator"
"""The geofence detector: which fences the van is in, decided with hysteresis and confirmation.

Fences are GeoJSON in lon/lat (polygons with holes, multipolygons, circles as a point with a
``radius_m`` property). Each fence is kept in its own local plane (metres east and north of its
first vertex, equirectangular: under 0.1 % error over a few kilometres), so borders and bands are
measured in metres. A :class:`FenceIndex` is built once (a uniform grid of bounding boxes grown by
the band, as compressed rows) and never changed: a new fence set is a new index, swapped in by
:meth:`Detector.replace` between two fixes, with each kept fence's state carried over by id.

The rules (:class:`Rules`), all on event time:

* A fix counts only when it is good: a 2D or 3D fix (3D only when ``require_3d``), HDOP known and
  at most ``max_hdop`` or unknown, and newer than the last counted fix (a repeated or older fix is
  stale). :class:`Detector` only sees good fixes; :meth:`Geofence.update` filters.
* **Hysteresis.** Outside, a fix is an *enter candidate* when it is inside the fence and at least
  ``band_m`` from its border (inside the fence shrunk by the band); inside, an *exit candidate*
  when it is outside and at least ``band_m`` from the border (outside the fence grown by it).
  A fix in the band changes nothing and breaks a run of candidates.
* **Confirmation.** A transition happens when ``confirm_fixes`` consecutive good fixes are
  candidates and the run spans at least ``confirm_s`` (for an enter into a ``stop`` fence, at
  least ``arrive_s``: driving through a stop is not an arrival). The event carries the time and
  position of the run's first fix: when the van crossed, not when we became sure.
* **GPS gaps.** A gap longer than ``max_gap_s`` between good fixes restarts a run (time in a
  tunnel confirms nothing), and state is kept across it: a fence never left gives no exit/enter
  pair.
* **Dwell.** Once per visit, at the first good fix at least the fence's ``dwell_s`` after the
  enter that is not an exit candidate.

Events of one fix are ordered by (time, fence id, enter < dwell < exit), so the order of fences
in a file never changes the output. This is the hot path (every fix against up to 10,000 fences),
written in Cython's pure-Python mode: ``setup.py`` compiles it, plain Python runs it otherwise.
"""

from __future__ import annotations

import itertools
import json
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cython
from cython.cimports.libc.math import copysign, fabs, sqrt

from protocols.errors import InputError

EARTH_RADIUS_M = 6371008.8  # mean radius (IUGG)
# C constants when compiled (a Python global would be a dictionary lookup per use on the hot path).
M_PER_DEG = cython.declare(cython.double, EARTH_RADIUS_M * math.pi / 180.0)
INF = cython.declare(cython.double, float("inf"))
OUTSIDE = cython.declare(cython.int, 0)
INSIDE = cython.declare(cython.int, 1)

ENTER = "enter"
DWELL = "dwell"
EXIT = "exit"
_RANK = {ENTER: 0, DWELL: 1, EXIT: 2}

KINDS = ("stop", "depot", "charger", "restricted", "zone")
"""Fence kinds: ``stop`` fences come from manifest stops (pass-by suppression applies)."""


@dataclass(frozen=True)
class Fence:
    """One fence. ``polygons`` holds rings of (lon, lat) (first ring of each polygon the outer
    one, the rest holes); a circle has no polygons and ``radius_m`` > 0 around (lon, lat).
    ``dwell_s`` 0 means no dwell event."""

    id: str
    kind: str = "zone"
    dwell_s: float = 0.0
    polygons: tuple[tuple[tuple[tuple[float, float], ...], ...], ...] = ()
    lon: float = 0.0
    lat: float = 0.0
    radius_m: float = 0.0


@dataclass(frozen=True)
class Rules:
    """The detector's thresholds (``[route]`` in the agent configuration)."""

    band_m: float = 20.0
    confirm_fixes: int = 3
    confirm_s: float = 2.0
    arrive_s: float = 30.0
    max_gap_s: float = 10.0
    max_hdop: float = 5.0
    require_3d: bool = False


# ---------------------------------------------------------------------------------------------
# GeoJSON


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _position(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) < 2:
        raise InputError(f"{where}: expected a position [lon, lat], got {value!r}")
    lon, lat = _number(value[0], f"{where}[0]"), _number(value[1], f"{where}[1]")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InputError(f"{where}: [{lon}, {lat}] is not a lon/lat position")
    return lon, lat


def _ring(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a linear ring (a list of positions)")
    points = [_position(p, f"{where}[{i}]") for i, p in enumerate(value)]
    if len(points) < 4 or points[0] != points[len(points) - 1]:
        raise InputError(f"{where}: a linear ring needs at least 4 positions, the last equal to the first")
    lons = [p[0] for p in points]
    if max(lons) - min(lons) > 180.0:
        raise InputError(f"{where}: a ring spanning more than 180 degrees of longitude is not supported")
    return tuple(points)


def _polygon(value: Any, where: str) -> tuple[tuple[tuple[float, float], ...], ...]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: expected a polygon (a list of linear rings)")
    return tuple(_ring(r, f"{where}[{i}]") for i, r in enumerate(value))


def fence_from_feature(feature: Any, where: str, kind: str = "zone") -> Fence:
    """A fence from one GeoJSON Feature: its ``id`` property (or the feature's ``id``) names it;
    ``kind``, ``dwell_s`` and (for a Point) ``radius_m`` are properties."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InputError(f"{where}: expected a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise InputError(f"{where}.properties: expected an object")
    fence_id = props.get("id", feature.get("id"))
    if not isinstance(fence_id, str | int) or isinstance(fence_id, bool) or str(fence_id) == "":
        raise InputError(f"{where}.properties.id: required (a non-empty string)")
    kind = props.get("kind", kind)
    if kind not in KINDS:
        raise InputError(f"{where}.properties.kind: {kind!r} is not one of {', '.join(KINDS)}")
    dwell_s = _number(props.get("dwell_s", 0), f"{where}.properties.dwell_s")
    if dwell_s < 0:
        raise InputError(f"{where}.properties.dwell_s: must be >= 0")
    return geometry_fence(str(fence_id), kind, dwell_s, feature.get("geometry"), props, f"{where}.geometry")


def geometry_fence(
    fence_id: str, kind: str, dwell_s: float, geometry: Any, props: dict[str, Any], where: str
) -> Fence:
    """A fence from a GeoJSON geometry (Polygon, MultiPolygon, or Point with ``props['radius_m']``)."""
    if not isinstance(geometry, dict):
        raise InputError(f"{where}: expected a GeoJSON geometry")
    gtype, coords = geometry.get("type"), geometry.get("coordinates")
    if gtype == "Point":
        lon, lat = _position(coords, f"{where}.coordinates")
        radius = _number(props.get("radius_m"), f"{where[: -len('.geometry')]}.properties.radius_m")
        if radius <= 0:
            raise InputError(f"{where}: a circle needs radius_m > 0")
        return Fence(fence_id, kind, dwell_s, lon=lon, lat=lat, radius_m=radius)
    polygons: tuple[tuple[tuple[tuple[float, float], ...], ...], ...]
    if gtype == "Polygon":
        polygons = (_polygon(coords, f"{where}.coordinates"),)
    elif gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise InputError(f"{where}.coordinates: expected a list of polygons")
        polygons = tuple(_polygon(p, f"{where}.coordinates[{i}]") for i, p in enumerate(coords))
    else:
        raise InputError(f"{where}.type: {gtype!r} is not Polygon, MultiPolygon or Point")
    lon, lat = polygons[0][0][0]
    return Fence(fence_id, kind, dwell_s, polygons, lon, lat)


def fences_from_geojson(doc: Any, where: str) -> list[Fence]:
    """Fences of a FeatureCollection; ids must be unique."""
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InputError(f"{where}: expected a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise InputError(f"{where}.features: expected a list")
    fences = [fence_from_feature(f, f"{where}.features[{i}]") for i, f in enumerate(features)]
    seen: set[str] = set()
    for i, fence in enumerate(fences):
        if fence.id in seen:
            raise InputError(f"{where}.features[{i}].properties.id: {fence.id!r} is used twice")
        seen.add(fence.id)
    return fences


def load_fences(path: Path) -> list[Fence]:
    """Fences of a GeoJSON file; errors name the file and the field."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    return fences_from_geojson(doc, str(path))


# ---------------------------------------------------------------------------------------------
# The index


@cython.final
@cython.cclass
class FenceIndex:
    """Fences in flat arrays and a grid of their bounding boxes grown by ``margin_m``. Immutable
    once built, so it can be built off the event thread and swapped in."""

    fences = cython.declare(list, visibility="readonly")
    ids = cython.declare(list, visibility="readonly")
    margin_m = cython.declare(cython.double, visibility="readonly")
    n = cython.declare(cython.Py_ssize_t, visibility="readonly")
    _olon: cython.double[:]
    _olat: cython.double[:]
    _kx: cython.double[:]
    _radius: cython.double[:]
    _e0: cython.int[:]
    _edges: cython.double[:]
    _bb: cython.double[:]
    _gx0: cython.double
    _gy0: cython.double
    _gdx: cython.double
    _gdy: cython.double
    _nx: cython.Py_ssize_t
    _ny: cython.Py_ssize_t
    _cell: cython.int[:]
    _items: cython.int[:]

    def __init__(self, fences: Sequence[Fence], margin_m: float = 0.0) -> None:
        self.fences = list(fences)
        self.ids = [f.id for f in self.fences]
        self.margin_m = margin_m
        self.n = len(self.fences)
        olon, olat, kx, radius = array("d"), array("d"), array("d"), array("d")
        e0, edges, bb = array("i", [0]), array("d"), array("d")
        for f in self.fences:
            k = M_PER_DEG * math.cos(math.radians(f.lat))
            olon.append(f.lon)
            olat.append(f.lat)
            kx.append(k)
            if f.polygons:
                radius.append(-1.0)
                for ring in (r for poly in f.polygons for r in poly):
                    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
                        edges.extend(((x1 - f.lon) * k, (y1 - f.lat) * M_PER_DEG))
                        edges.extend(((x2 - f.lon) * k, (y2 - f.lat) * M_PER_DEG))
                lons = [p[0] for poly in f.polygons for p in poly[0]]
                lats = [p[1] for poly in f.polygons for p in poly[0]]
            else:
                radius.append(f.radius_m)
                dlat = f.radius_m / M_PER_DEG
                lons = [f.lon - f.radius_m / k, f.lon + f.radius_m / k]
                lats = [f.lat - dlat, f.lat + dlat]
            e0.append(len(edges) // 4)
            # The grown box, with 1 % slack for the change of scale across the fence.
            mlat = margin_m * 1.01 / M_PER_DEG
            kmin = M_PER_DEG * math.cos(math.radians(min(89.9, max(abs(min(lats)), abs(max(lats))))))
            mlon = margin_m * 1.01 / kmin
            bb.extend((min(lons) - mlon, min(lats) - mlat, max(lons) + mlon, max(lats) + mlat))
        self._olon, self._olat, self._kx, self._radius = olon, olat, kx, radius
        self._e0, self._edges, self._bb = e0, edges if edges else array("d", [0.0]), bb
        self._build_grid(bb)

    def _build_grid(self, bb: array[float]) -> None:
        """Cells about the median box size (at most 4 per fence, at least 1), each listing the
        fences whose grown box touches it, as compressed rows (``_cell`` offsets into ``_items``)."""
        n = self.n
        if n == 0:
            self._gx0 = self._gy0 = 0.0
            self._gdx = self._gdy = 1.0
            self._nx = self._ny = 1
            self._cell, self._items = array("i", [0, 0]), array("i", [0])
            return
        x0, y0 = min(bb[0::4]), min(bb[1::4])
        x1, y1 = max(bb[2::4]), max(bb[3::4])
        widths = sorted(bb[4 * i + 2] - bb[4 * i] for i in range(n))
        heights = sorted(bb[4 * i + 3] - bb[4 * i + 1] for i in range(n))
        dx, dy = max(widths[n // 2], 1e-7), max(heights[n // 2], 1e-7)
        nx, ny = max(1, math.ceil((x1 - x0) / dx)), max(1, math.ceil((y1 - y0) / dy))
        cap = max(64, 4 * n)
        while nx * ny > cap:
            dx, dy = dx * 1.5, dy * 1.5
            nx, ny = max(1, math.ceil((x1 - x0) / dx)), max(1, math.ceil((y1 - y0) / dy))
        self._gx0, self._gy0, self._gdx, self._gdy, self._nx, self._ny = x0, y0, dx, dy, nx, ny
        spans = []
        counts = [0] * (nx * ny + 1)
        for i in range(n):
            ax = min(nx - 1, int((bb[4 * i] - x0) / dx))
            bx = min(nx - 1, int((bb[4 * i + 2] - x0) / dx))
            ay = min(ny - 1, int((bb[4 * i + 1] - y0) / dy))
            by = min(ny - 1, int((bb[4 * i + 3] - y0) / dy))
            spans.append((ax, bx, ay, by))
            for cx in range(ax, bx + 1):
                for cy in range(ay, by + 1):
                    counts[cx * ny + cy + 1] += 1
        for c in range(1, len(counts)):
            counts[c] += counts[c - 1]
        fill = counts[: nx * ny]
        items = array("i", [0]) * max(1, counts[nx * ny])
        for i, (ax, bx, ay, by) in enumerate(spans):
            for cx in range(ax, bx + 1):
                for cy in range(ay, by + 1):
                    items[fill[cx * ny + cy]] = i
                    fill[cx * ny + cy] += 1
        self._cell, self._items = array("i", counts), items

    @cython.cfunc
    @cython.exceptval(check=False)
    def _cell_of(self, lat: cython.double, lon: cython.double) -> cython.Py_ssize_t:
        """The grid cell holding (lat, lon), -1 outside the grid."""
        fx: cython.double = (lon - self._gx0) / self._gdx
        fy: cython.double = (lat - self._gy0) / self._gdy
        if not (0.0 <= fx <= self._nx and 0.0 <= fy <= self._ny):  # NaN fails too
            return -1
        cx: cython.Py_ssize_t = min(self._nx - 1, cython.cast(cython.Py_ssize_t, fx))
        cy: cython.Py_ssize_t = min(self._ny - 1, cython.cast(cython.Py_ssize_t, fy))
        return cx * self._ny + cy

    @cython.cfunc
    @cython.exceptval(check=False)
    def _in_box(self, i: cython.Py_ssize_t, lat: cython.double, lon: cython.double) -> cython.bint:
        return (
            self._bb[4 * i] <= lon <= self._bb[4 * i + 2]
            and self._bb[4 * i + 1] <= lat <= self._bb[4 * i + 3]
        )

    @cython.cfunc
    @cython.exceptval(check=False)
    def _signed(
        self, i: cython.Py_ssize_t, lat: cython.double, lon: cython.double, distance: cython.bint
    ) -> cython.double:
        """Signed distance in metres from (lat, lon) to fence ``i``'s border: > 0 inside (even-odd
        rule over every ring, so holes are outside), < 0 outside; the sign bit decides a zero (a
        point on a polygon's edge may be either, on a circle it is outside). Without ``distance``,
        only the sign is meaningful (+1 / -1)."""
        dlon: cython.double = lon - self._olon[i]
        if dlon > 180.0:
            dlon -= 360.0
        elif dlon < -180.0:
            dlon += 360.0
        x: cython.double = dlon * self._kx[i]
        y: cython.double = (lat - self._olat[i]) * M_PER_DEG
        r: cython.double = self._radius[i]
        if r > 0.0:
            d: cython.double = r - sqrt(x * x + y * y)
            return d if d != 0.0 else -0.0  # on the circle is outside, as for the sign alone
        inside: cython.bint = False
        best: cython.double = INF
        e: cython.Py_ssize_t
        x1: cython.double
        y1: cython.double
        x2: cython.double
        y2: cython.double
        ex: cython.double
        ey: cython.double
        length2: cython.double
        u: cython.double
        px: cython.double
        py: cython.double
        for e in range(self._e0[i], self._e0[i + 1]):
            x1 = self._edges[4 * e]
            y1 = self._edges[4 * e + 1]
            x2 = self._edges[4 * e + 2]
            y2 = self._edges[4 * e + 3]
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
            if distance:
                ex = x2 - x1
                ey = y2 - y1
                length2 = ex * ex + ey * ey
                u = 0.0
                if length2 > 0.0:
                    u = ((x - x1) * ex + (y - y1) * ey) / length2
                    u = 0.0 if u < 0.0 else (1.0 if u > 1.0 else u)
                px = x1 + u * ex - x
                py = y1 + u * ey - y
                best = min(best, px * px + py * py)
        if not distance:
            return 1.0 if inside else -1.0
        return sqrt(best) if inside else -sqrt(best)

    def signed_distance(self, i: int, lat: float, lon: float) -> float:
        """Signed distance in metres from (lat, lon) to fence ``i``'s border (> 0 inside)."""
        return float(self._signed(i, lat, lon, True))

    def containing(self, lat: float, lon: float) -> list[int]:
        """Indexes of the fences containing (lat, lon), ascending (border points may go either
        way)."""
        out: list[int] = []
        c: cython.Py_ssize_t = self._cell_of(lat, lon)
        if c < 0:
            return out
        k: cython.Py_ssize_t
        i: cython.Py_ssize_t
        for k in range(self._cell[c], self._cell[c + 1]):
            i = self._items[k]
            if self._in_box(i, lat, lon) and self._signed(i, lat, lon, False) > 0.0:
                out.append(i)
        return out


# ---------------------------------------------------------------------------------------------
# The detector

Event = tuple[float, str, str, float, float]
"""(time, fence id, ``enter`` | ``dwell`` | ``exit``, lat, lon)."""


@cython.final
@cython.cclass
class Detector:
    """Per-fence hysteresis state over one :class:`FenceIndex`. Feed good fixes in time order
    (:class:`Geofence` filters); each call returns the events it decided, in output order."""

    rules = cython.declare(object, visibility="readonly")
    index = cython.declare(FenceIndex, visibility="readonly")
    _active: cython.int[:]
    _active_at: cython.int[:]
    _n_active: cython.Py_ssize_t
    _band: cython.double
    _confirm_fixes: cython.int
    _confirm_s: cython.double
    _max_gap_s: cython.double
    _stamp: cython.long
    _need_enter_s: cython.double[:]
    _dwell_s: cython.double[:]
    _state: cython.int[:]
    _dwelled: cython.int[:]
    _seen: cython.long[:]
    _run_n: cython.int[:]
    _run_t0: cython.double[:]
    _run_last: cython.double[:]
    _run_lat: cython.double[:]
    _run_lon: cython.double[:]
    _enter_t: cython.double[:]
    _near_x: cython.double[:]
    _near_y: cython.double[:]
    _near_d: cython.double[:]

    def __init__(self, fences: Sequence[Fence] | FenceIndex, rules: Rules | None = None) -> None:
        self.rules = rules if rules is not None else Rules()
        self._band = self.rules.band_m
        self._confirm_fixes = max(1, self.rules.confirm_fixes)
        self._confirm_s = self.rules.confirm_s
        self._max_gap_s = self.rules.max_gap_s
        self._stamp = 0
        self._install(fences, {})

    def _install(self, fences: Sequence[Fence] | FenceIndex, carried: dict[str, tuple[Any, ...]]) -> None:
        index = fences if isinstance(fences, FenceIndex) else FenceIndex(fences, self.rules.band_m)
        if index.margin_m < self.rules.band_m:
            raise ValueError("the index's margin must be at least the band")
        n = index.n
        rules = self.rules
        self.index = index
        self._need_enter_s = array(
            "d",
            [
                max(rules.confirm_s, rules.arrive_s) if f.kind == "stop" else rules.confirm_s
                for f in index.fences
            ],
        )
        self._dwell_s = array("d", [f.dwell_s for f in index.fences])
        self._state = array("i", [OUTSIDE]) * max(n, 1)
        self._dwelled = array("i", [0]) * max(n, 1)
        self._seen = array("l", [0]) * max(n, 1)
        self._run_n = array("i", [0]) * max(n, 1)
        self._run_t0 = array("d", [0.0]) * max(n, 1)
        self._run_last = array("d", [0.0]) * max(n, 1)
        self._run_lat = array("d", [0.0]) * max(n, 1)
        self._run_lon = array("d", [0.0]) * max(n, 1)
        self._enter_t = array("d", [0.0]) * max(n, 1)
        self._near_x = array("d", [0.0]) * max(n, 1)
        self._near_y = array("d", [0.0]) * max(n, 1)
        self._near_d = array("d", [math.nan]) * max(n, 1)
        self._active = array("i", [0]) * max(n, 1)
        self._active_at = array("i", [-1]) * max(n, 1)
        self._n_active = 0
        for i, fence_id in enumerate(index.ids):
            kept = carried.get(fence_id)
            if kept is None:
                continue
            (
                self._state[i],
                self._dwelled[i],
                self._run_n[i],
                self._run_t0[i],
                self._run_last[i],
                self._run_lat[i],
                self._run_lon[i],
                self._enter_t[i],
            ) = kept
            if self._state[i] == INSIDE or self._run_n[i] > 0:
                self._activate(i)

    @cython.cfunc
    @cython.exceptval(check=False)
    def _activate(self, i: cython.Py_ssize_t) -> cython.void:
        """Adds fence ``i`` to the active list (inside, or a run in progress) unless there."""
        if self._active_at[i] < 0:
            self._active_at[i] = cython.cast(cython.int, self._n_active)
            self._active[self._n_active] = cython.cast(cython.int, i)
            self._n_active += 1

    @cython.cfunc
    @cython.exceptval(check=False)
    def _deactivate(self, i: cython.Py_ssize_t) -> cython.void:
        """Removes fence ``i`` from the active list, the last entry taking its place."""
        at: cython.Py_ssize_t = self._active_at[i]
        if at >= 0:
            self._n_active -= 1
            last: cython.int = self._active[self._n_active]
            self._active[at] = last
            self._active_at[last] = cython.cast(cython.int, at)
            self._active_at[i] = -1

    def _active_fences(self) -> list[int]:
        """Indexes of the active fences (inside, or a run in progress), ascending."""
        return sorted(self._active[k] for k in range(self._n_active))

    def replace(self, fences: Sequence[Fence] | FenceIndex) -> None:
        """Detect against new fences from the next fix on. A fence whose id is kept keeps its
        state (inside, dwell done, a run in progress); a removed fence is forgotten without an
        event. Pass a prebuilt :class:`FenceIndex` (built with a margin of at least the band) to
        keep the build off the event thread."""
        carried = {
            self.index.ids[i]: (
                self._state[i],
                self._dwelled[i],
                self._run_n[i],
                self._run_t0[i],
                self._run_last[i],
                self._run_lat[i],
                self._run_lon[i],
                self._enter_t[i],
            )
            for i in self._active_fences()
        }
        self._install(fences, carried)

    def inside(self) -> list[str]:
        """Ids of the fences the van is in (confirmed), sorted."""
        return sorted(self.index.ids[i] for i in self._active_fences() if self._state[i] == INSIDE)

    def update(self, t: float, lat: float, lon: float) -> list[Event]:
        """The events one good fix decides (at most one transition per fence)."""
        index: FenceIndex = self.index
        events: list[Event] = []
        self._stamp += 1
        stamp: cython.long = self._stamp
        c: cython.Py_ssize_t = index._cell_of(lat, lon)
        k: cython.Py_ssize_t
        i: cython.Py_ssize_t
        if c >= 0:
            for k in range(index._cell[c], index._cell[c + 1]):
                i = index._items[k]
                if index._in_box(i, lat, lon):
                    self._seen[i] = stamp
                    self._step(i, t, lat, lon, self._decisive(i, lat, lon), events)
        # Backwards, as a fence leaving the list is replaced by the last (already stepped) one.
        # The order of fences is free: events are sorted below.
        k = self._n_active - 1
        while k >= 0:
            i = self._active[k]
            if self._seen[i] != stamp:  # beyond the grown box: farther out than the band
                self._step(i, t, lat, lon, -INF, events)
            k -= 1
        if len(events) > 1:
            events.sort(key=lambda e: (e[0], e[1], _RANK[e[2]]))
        return events

    @cython.cfunc
    @cython.exceptval(check=False)
    def _decisive(self, i: cython.Py_ssize_t, lat: cython.double, lon: cython.double) -> cython.double:
        """The signed border distance :meth:`_step` needs for fence ``i``, or +-inf where that
        provably decides the same: on the state's side no rule can fire, and beyond the band only
        the side matters. The last exact distance is kept with its point (in the fence's plane):
        a fix nearer to that point than the distance is on the same side (moving less than the
        distance to the nearest edge crosses no edge), at least that much closer to the border;
        so a van inside a large zone or halted at a stop scans the edges again only once it has
        moved far enough to matter."""
        index: FenceIndex = self.index
        dlon: cython.double = lon - index._olon[i]
        if dlon > 180.0:
            dlon -= 360.0
        elif dlon < -180.0:
            dlon += 360.0
        x: cython.double = dlon * index._kx[i]
        y: cython.double = (lat - index._olat[i]) * M_PER_DEG
        ax: cython.double = x - self._near_x[i]
        ay: cython.double = y - self._near_y[i]
        inside: cython.bint = self._state[i] == INSIDE
        d: cython.double = self._near_d[i]
        # What is left of the kept distance, less a micrometre (and a relative 1e-9) for rounding.
        room: cython.double = fabs(d) * (1.0 - 1e-9) - 1e-6  # NaN (nothing kept) fails below
        moved2: cython.double = ax * ax + ay * ay
        if (
            room > 0.0
            and moved2 < room * room
            and ((copysign(1.0, d) > 0.0) == inside or room - sqrt(moved2) >= self._band)
        ):
            return copysign(INF, d)
        d = index._signed(i, lat, lon, True)
        self._near_x[i] = x
        self._near_y[i] = y
        self._near_d[i] = d
        if (copysign(1.0, d) > 0.0) == inside:
            return copysign(INF, d)
        return d

    @cython.cfunc
    def _step(
        self,
        i: cython.Py_ssize_t,
        t: cython.double,
        lat: cython.double,
        lon: cython.double,
        d: cython.double,
        events: list[Event],
    ) -> cython.void:
        inside: cython.bint = self._state[i] == INSIDE
        candidate: cython.bint = d <= -self._band if inside else d >= self._band
        if candidate:
            if self._run_n[i] == 0 or t - self._run_last[i] > self._max_gap_s:
                self._run_n[i] = 1
                self._run_t0[i] = t
                self._run_lat[i] = lat
                self._run_lon[i] = lon
            else:
                self._run_n[i] += 1
            self._run_last[i] = t
            need_s: cython.double = self._confirm_s if inside else self._need_enter_s[i]
            if self._run_n[i] >= self._confirm_fixes and t - self._run_t0[i] >= need_s:
                self._run_n[i] = 0
                fence_id = self.index.ids[i]
                if inside:
                    self._state[i] = OUTSIDE
                    events.append((self._run_t0[i], fence_id, EXIT, self._run_lat[i], self._run_lon[i]))
                else:
                    self._state[i] = INSIDE
                    self._dwelled[i] = 0
                    self._enter_t[i] = self._run_t0[i]
                    events.append((self._run_t0[i], fence_id, ENTER, self._run_lat[i], self._run_lon[i]))
                inside = not inside
        else:
            self._run_n[i] = 0
        if (
            inside
            and not self._dwelled[i]
            and self._dwell_s[i] > 0.0
            and d > -self._band
            and t - self._enter_t[i] >= self._dwell_s[i]
        ):
            self._dwelled[i] = 1
            events.append((t, self.index.ids[i], DWELL, lat, lon))
        if inside or self._run_n[i] > 0:
            self._activate(i)
        else:
            self._deactivate(i)


class Geofence:
    """The detector with its fix filter: what the core stage and ``dropline geofence`` use."""

    def __init__(self, fences: Sequence[Fence] | FenceIndex, rules: Rules | None = None) -> None:
        self.rules = rules if rules is not None else Rules()
        self.detector = Detector(fences, self.rules)
        self._last_t = -INF
        self.ignored: dict[str, int] = {}

    def good(self, t: float, mode: int, hdop: float | None) -> bool:
        """Whether a fix counts (see the module's rules); counts the reason when it does not."""
        reason = ""
        if mode < 2 or (mode < 3 and self.rules.require_3d):
            reason = "mode"
        elif hdop is not None and not hdop <= self.rules.max_hdop:
            reason = "hdop"
        elif not t > self._last_t:
            reason = "stale"
        if reason:
            self.ignored[reason] = self.ignored.get(reason, 0) + 1
            return False
        return True

    def update(
        self, t: float, lat: float, lon: float, mode: int = 3, hdop: float | None = None
    ) -> list[Event]:
        """The events of one fix, or none when it is not good."""
        if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(t)):
            self.ignored["not_finite"] = self.ignored.get("not_finite", 0) + 1
            return []
        if not self.good(t, mode, hdop):
            return []
        self._last_t = t
        return self.detector.update(t, lat, lon)

    def replace(self, fences: Sequence[Fence] | FenceIndex) -> None:
        """See :meth:`Detector.replace`."""
        self.detector.replace(fences)


def run(
    fences: Sequence[Fence],
    fixes: Iterable[tuple[float, float, float, int, float | None]],
    rules: Rules | None = None,
) -> list[Event]:
    """Every event of a sequence of (time, lat, lon, mode, hdop) fixes."""
    geofence = Geofence(fences, rules)
    return [e for t, lat, lon, mode, hdop in fixes for e in geofence.update(t, lat, lon, mode, hdop)]
