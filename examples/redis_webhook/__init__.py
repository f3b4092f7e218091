"""A webhook receiver whose events are handled by a fleet of workers
through Redis: ``app`` publishes, ``collectors`` names what the workers
run."""
