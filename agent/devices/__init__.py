"""Serial devices: ports, the device loops, and which loop runs which device.

``ports`` opens and reopens serial ports; ``runner`` is the loop of stream
devices (they print, we listen); ``mtsics`` the loop of MT-SICS balances (we
ask, they answer); ``factory`` picks the loop for a device's config.
"""

from coffee_telemetry.agent.devices.factory import make_device_runner
from coffee_telemetry.agent.devices.runner import DeviceRunner, PortRunner, Runner

__all__ = ["DeviceRunner", "PortRunner", "Runner", "make_device_runner"]
