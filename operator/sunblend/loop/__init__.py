"""The reconcile loop: observe, decide, validate, act and report, with no kopf."""
