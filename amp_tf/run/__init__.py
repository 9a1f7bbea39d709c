"""A run: a job's ID data, training, the run folder, the job itself, its scoring, reports, plots and files, the named presets.

Imports nothing itself: a command that reads only the light modules stays light."""
