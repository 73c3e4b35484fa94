"""Read-only adapters: the cluster snapshot (kubernetes), and later Prometheus and NVML."""
