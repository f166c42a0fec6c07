"""Lots: valid lot codes and the store of active lots per station (``store``), and the
agent's view of them, with the ``lot`` command (``service``).
"""
