"""Pure decisions: demand forecast, the blend planner, plan checks. No I/O and no clock reads."""
