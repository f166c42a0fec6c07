"""Hullers on the RS-485 bus.

``rtu`` sends one Modbus request at a time through pymodbus; ``bus`` schedules the
requests of every unit on a bus; ``service`` turns counters into huller totals and
running hours, with ``state`` computing each huller's next state. Maintenance: ``tasks``
(service tasks, their status, the records), ``store`` (their SQLite database) and
``record`` (recording a service done).
"""
