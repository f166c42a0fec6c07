"""The outbox: every accepted reading is committed here before anything else.

``store`` is the durable log (SQLite WAL) with one cursor per sink, on the tables in
``schema``; ``stats`` reads what it holds and owes (also from another process); ``sink``
says what a sink is; ``delivery`` runs one loop per sink.
"""
