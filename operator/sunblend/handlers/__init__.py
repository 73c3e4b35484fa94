"""kopf glue only: thin handlers, the timer, probes, metrics and operator settings."""
