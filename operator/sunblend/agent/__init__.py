"""The GPU agent: a DaemonSet that reads NVML on each GPU node and exports Prometheus metrics.

``nvml`` is the NVML interface (real and fake), ``reading`` turns NVML calls into one reading per
sample, ``exporter`` keeps the latest reading as metrics, and ``run`` is the entry point that the
``sunblend agent`` command and ``python -m sunblend.agent`` call. The operator never imports it.
"""
