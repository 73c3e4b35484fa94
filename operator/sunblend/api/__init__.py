"""The InferencePool API: pydantic models of spec and status, and constants. Imports nothing of ours."""
