"""The operations layer's name for the platform clock (`cbi_platform.clock`, which lives in the
bottom layer so that the market sources can read it too)."""

from cbi_platform.clock import (
    CLOCK_ENV,
    DATA_CLOCK_ENV,
    ClockError,
    data_through,
    now,
    read_clock_file,
    simulated,
    today,
    write_clock_file,
)

__all__ = [
    "CLOCK_ENV",
    "DATA_CLOCK_ENV",
    "ClockError",
    "data_through",
    "now",
    "read_clock_file",
    "simulated",
    "today",
    "write_clock_file",
]
