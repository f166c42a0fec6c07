"""Hullers on the RS-485 bus.

``bus`` polls the counters of a bus as a client of the bus's scheduler
(``agent.bus``: one port, one request at a time, shared with any T/RH sensors on the
line); ``service`` turns counters into huller totals and
running hours, with ``state`` computing each huller's next state. Maintenance: ``tasks``
(service tasks, their status, the records), ``store`` (their SQLite database) and
``record`` (recording a service done).
"""
