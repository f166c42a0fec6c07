"""The web server: pages and security headers (``server``), the JSON API (``api``), login
(``auth``), live events (``live``), bounded connections (``connlimit``).
"""
