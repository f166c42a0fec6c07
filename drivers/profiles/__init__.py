"""Meter profiles: ``profile = "<name>"`` in ``[[devices]]``.

A profile names a model (or a family speaking one documented format) and supplies
what its manual fixes: the driver, the serial settings, the framing and the field
patterns. The device's own keys still win, table by table, so a profile is a starting
point a site can correct (a meter set to 4800 baud keeps ``profile`` and adds
``[devices.serial] baudrate = 4800``)::

    [[devices]]
    id = "umid-2"
    profile = "tesma-plus2"       # driver moisture.tesma, 9600 8N1
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1ABC-if00-port0"

Every profile cites the manual (title, section, URL) its format comes from, in its
module's docstring and in ``Profile.source``. No format is invented: a model whose
output no public manual documents has no profile. Searched and not documented (their
manuals give no bytes, or no public copy of the page exists): Gehaka G650, G610i, G810
("Protocolo da saída serial RS232C" pages not public); Motomco 919/999ES; DICKEY-john
GAC 2100 (formats ``PRN20``/``CSV01`` named, columns not given); Kett PM-450/PM-650 and
PT-2600 (no byte layout); Toledo do Brasil 9091/2090 protocols P03/P05 (pages not
public); Sanko MR-300 (documented, but it waits for an ACK after each frame, which no
driver here sends); Toledo Prix III protocol 1 (polled with ENQ; no driver polls it).

``apply_profile`` is what the config loader calls on each raw ``[[devices]]`` table
before validating it; it is pure and never reads a file.

| profile | driver | models |
|---|---|---|
| ``tesma-plus2`` | ``moisture.tesma`` | Tesma Plus2, Plus2 Printer |
| ``moisture-ticket-pt`` | ``moisture.ticket`` | none (inferred layout, §6 A2) |
| ``mettler-mtsics`` | ``scale.mtsics`` | Mettler Toledo balances on MT-SICS |
| ``toledo-continuous`` | ``scale.toledo_continuous`` | Wildcat, IND445 and clones |
| ``ad-balance`` | ``scale.ascii`` | A&D EK-L, GX-A, GF-A |
| ``st-gs-indicator`` | ``scale.ascii`` | Tiger TI-02-P, Liden LUW2001, Kern KFB-TM |
"""

from __future__ import annotations

from collections.abc import Mapping

from coffee_telemetry.drivers.profiles import (
    ad_balance,
    mettler_mtsics,
    moisture_ticket_pt,
    st_gs_indicator,
    tesma_plus2,
    toledo_continuous,
)
from coffee_telemetry.drivers.profiles._profile import Profile, merge

__all__ = ["PROFILES", "Profile", "ProfileProblem", "apply_profile", "for_driver", "merge"]

#: Every profile by name; for one driver, the more specific format comes first.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        tesma_plus2.PROFILE,
        moisture_ticket_pt.PROFILE,
        mettler_mtsics.PROFILE,
        toledo_continuous.PROFILE,
        ad_balance.PROFILE,
        st_gs_indicator.PROFILE,
    )
}


class ProfileProblem(ValueError):
    """A ``profile`` key that cannot be applied; the message names what is known."""


def for_driver(driver: str) -> tuple[Profile, ...]:
    """The profiles whose output ``driver`` reads, in ``PROFILES`` order."""
    return tuple(p for p in PROFILES.values() if p.driver == driver)


def apply_profile(device: Mapping[str, object]) -> dict[str, object]:
    """A raw ``[[devices]]`` table with its profile laid under it.

    A table without ``profile`` comes back as it was (a copy). The ``profile`` key
    stays, so the parsed device still says which profile it came from.

    Raises:
        ProfileProblem: The name is not a string or no profile has it, or the table's
            own ``driver`` is not the profile's.
    """
    name = device.get("profile")
    if name is None:
        return dict(device)
    known = ", ".join(repr(n) for n in PROFILES)
    if not isinstance(name, str):
        raise ProfileProblem(f"must be a profile name (a string); known profiles: {known}")
    profile = PROFILES.get(name)
    if profile is None:
        raise ProfileProblem(f"unknown profile {name!r}; known profiles: {known}")
    driver = device.get("driver", profile.driver)
    if driver != profile.driver:
        raise ProfileProblem(
            f"profile {name!r} is for driver {profile.driver!r}, not {driver!r}"
            " (drop `driver`, or choose another profile)"
        )
    return merge(profile.device_table(), device)
