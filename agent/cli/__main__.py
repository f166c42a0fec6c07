"""``python -m coffee_telemetry.agent.cli``: the ``coffee-telemetry`` command."""

from coffee_telemetry.agent.cli.main import main

raise SystemExit(main())
