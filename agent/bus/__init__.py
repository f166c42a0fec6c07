"""One RS-485 adapter and everything on it.

``rtu`` is the Modbus RTU master on the adapter (one request out, one reply or mapped
error back); ``scheduler`` is the bus's own scheduler: it opens the port once, hands the
line to one request at a time, and runs the pollers of every kind of unit on the bus
(the hullers' counters, the storage areas' T/RH sensors) each on its own intervals.
"""

from coffee_telemetry.agent.bus.rtu import BusSpec, ExchangeFailed, Fault, RtuMaster
from coffee_telemetry.agent.bus.scheduler import BusClient, BusScheduler, bus_schedulers

__all__ = [
    "BusClient",
    "BusScheduler",
    "BusSpec",
    "ExchangeFailed",
    "Fault",
    "RtuMaster",
    "bus_schedulers",
]
