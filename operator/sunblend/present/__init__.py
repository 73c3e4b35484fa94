"""Presentation of plans for people and machines: rich tables, JSON/YAML documents, PNG charts."""
