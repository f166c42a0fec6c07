"""Hullers on the RS-485 bus: the Modbus bus scheduler (``bus``), huller totals and running
hours (``service``), service tasks and their store (``maintenance``).
"""
