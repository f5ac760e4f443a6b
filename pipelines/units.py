"""Physical constants shared by drivers, fusion and features (one definition each)."""

from __future__ import annotations

STANDARD_GRAVITY = 9.80665
"""m/s^2 per g: the unit of the datasheets' "g" (CGPM 1901)."""
