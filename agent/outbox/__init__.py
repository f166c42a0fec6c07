"""The outbox: the durable log every reading is committed to (``store``), what a sink is
(``sink``), and one delivery loop per sink (``delivery``).
"""
