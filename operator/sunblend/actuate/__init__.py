"""The only writers to the cluster: pool status outside kopf's own patches, and events."""
