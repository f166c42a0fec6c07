"""Simulated devices on pseudo-terminals, built from the drivers' encoders."""
