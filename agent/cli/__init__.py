"""The ``coffee-telemetry`` command (``main``), its verbs and the zero-setup demo (``demo``).

``main`` builds the parser and runs the agent and the simulators; ``outbox``,
``maintenance``, ``lots`` and ``alerts`` are the verbs that read or change the site's
stores; ``_common`` holds what they share (exit codes, the ``-c/--config`` option).
"""
