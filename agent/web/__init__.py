"""The web server and everything it serves.

``server`` (pages, security headers, login routes, live events), ``api`` (the JSON API),
``auth`` (sessions and passwords), ``live`` (the live hub), ``connlimit`` (bounded
connections).
"""
