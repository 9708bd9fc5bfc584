"""CAN frames of the simulated van, encoded with the vehicle's DBC by cantools (Kona Electric
P-CAN: ``BatteryLimits`` for state of charge, ``IEB_386_WHEEL`` for speed, ``BodyState`` for the
ignition switch), so the agent's decoder reads them as it reads the real car's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KONA_DBC = ROOT / "tests" / "data" / "can" / "kona_ev" / "pcan.dbc"


class Encoder:
    """Frames ``(arbitration id, data)`` for one moment of the van's state."""

    def __init__(self, dbc: Path = KONA_DBC) -> None:
        import cantools

        self.db: Any = cantools.database.load_file(str(dbc), strict=False)

    def _frame(self, name: str, values: dict[str, float]) -> tuple[int, bytes]:
        msg = self.db.get_message_by_name(name)
        data: dict[str, float] = {s.name: 0.0 for s in msg.signals}
        data.update(values)
        return int(msg.frame_id), bytes(msg.encode(data, scaling=True, strict=False))

    def frames(self, soc_pct: float, speed_kmh: float, ignition_on: bool) -> list[tuple[int, bytes]]:
        """State of charge at 0.1 % (0.5 % steps plus a 0.1 % fraction, as the DBC splits it),
        four equal wheel speeds, the ignition switch (4 = on, 0 = off, per the kona_ev mapping)."""
        tenths = max(0, min(1000, round(soc_pct * 10)))
        half_steps = tenths // 5
        return [
            self._frame("BatteryLimits", {"SoC_Maybe": half_steps * 0.5, "SoC_Fraction": (tenths % 5) * 0.1}),
            self._frame("IEB_386_WHEEL", {f"WHL_SPD_{w}": speed_kmh for w in ("FL", "FR", "RL", "RR")}),
            self._frame("BodyState", {"IgnitionSw": 4 if ignition_on else 0}),
        ]


def soc_after(soc_pct: float, metres: float, speed_mps: float, kwh_per_km: float, pack_kwh: float) -> float:
    """State of charge after ``metres`` at ``speed_mps``: consumption grows with the square of
    speed above 50 km/h (air drag), a rough but monotone model of a delivery van."""
    drag = 1.0 + max(0.0, speed_mps * 3.6 - 50.0) ** 2 / 2500.0
    used_kwh = metres / 1000.0 * kwh_per_km * drag
    return max(0.0, soc_pct - 100.0 * used_kwh / pack_kwh) if math.isfinite(metres) else soc_pct
