"""edged: on-device sensor learning service for factory edge gateways."""

from __future__ import annotations

__version__ = "0.1.0"
