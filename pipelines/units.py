"""Physical constants shared by drivers, fusion and features (one definition each)."""

from __future__ import annotations

STANDARD_GRAVITY = 9.80665
"""m/s^2 per g: the unit of the datasheets' "g" (CGPM 1901)."""

ACCEL_UNITS = {"m/s2": 1.0, "g": STANDARD_GRAVITY}
"""m/s^2 per unit of each ``accel_unit`` a task's config may name."""
