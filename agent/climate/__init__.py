"""Storage climate: temperature/RH sensors of the storage areas on an RS-485 bus.

``service`` polls the sensors (``drivers.climate_modbus_th``) and hands ``climate``
readings to the accept stage.
"""
