"""Browser tests: fixtures in ``fixtures.py``, helpers in ``helpers.py``.

Without the Python package playwright the browser tests cannot even be imported;
then only ``test_environment.py`` is collected, and it fails saying what to
install, so a run of the integration tests never passes without the browser
tests, while ``-m "not integration"`` still works on a machine without them.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("playwright") is not None:
    from tests.browser.fixtures import browser, site, tab

    __all__ = ["browser", "site", "tab"]
else:  # pragma: no cover - environment check
    collect_ignore = ["test_pages.py", "test_alarm.py", "test_alarm_channels.py", "test_clock.py"]
