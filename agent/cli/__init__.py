"""The ``coffee-telemetry`` command (``main``) and the zero-setup demo (``demo``)."""
