"""Serving: the SavedModel and LiteRT exports (the shipped detector in-graph) and folded inference.

Imports nothing itself: a command that reads only the light modules stays light."""
