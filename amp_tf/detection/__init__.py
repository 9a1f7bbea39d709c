"""Detection: the score registry, the baselines, the detector protocol (one module per family), the shipped detector and its selection, the OOD metrics.

Imports nothing itself: a command that reads only the light modules stays light."""
