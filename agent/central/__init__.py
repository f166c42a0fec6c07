"""The central side of many sites: the JetStream streams and the ``recorder`` service."""
