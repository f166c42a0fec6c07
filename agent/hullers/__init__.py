"""Hullers on the RS-485 bus.

``bus`` schedules Modbus requests on a bus; ``service`` turns counters into huller
totals and running hours; ``maintenance`` keeps service tasks and their store.
"""
