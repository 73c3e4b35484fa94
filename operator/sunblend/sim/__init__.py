"""Trace replay: the engine, baseline policies and the sunblend policy. Uses core, never actuate."""
