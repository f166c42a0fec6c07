"""``coffee-telemetry doctor``: what a technician checks on site, each with its fix.

Theory of operation
-------------------

Each family of checks is a module of small functions, each returning one ``Result``
(``ok``, ``warn`` or ``fail``, a message and a fix, as keys of the ``texts``
catalogue so the same result prints in Portuguese or English):

- ``serialports``: each configured port exists, the service user may open it, no
  other process holds it, and bytes arrive and read as text at the configured
  settings (else a guess of the meter's settings, by ``onboard.detect``'s scoring);
- ``network``: the MQTT broker answers CONNECT with the configured credentials,
  InfluxDB answers ``/ping`` and an authenticated query, and a TLS server's
  certificate is valid, with its days to expiry;
- ``system``: the clock is synchronised, the data dir has free space, whether it lives
  on an SD card, and the systemd unit's state;
- ``timesources``: each configured time source (ntp, gps, modem, rtc, user, system)
  on one line: its state (a GPS's fix, no fix or no data; a port missing) and its fix;
- ``backlog``: what the outbox still owes each sink and since when.

Every check that waits has its own timeout, and ``run.run_checks`` runs them side by
side under one overall deadline: a check still running at the deadline is reported as
failed ("did not answer in time") rather than waited for. Nothing here writes to a
device, and nothing stops or disturbs a running agent: a port the agent holds is not
listened to.
"""
