"""Running agentpool as a service: sd_notify, Prometheus metrics, the HTTP endpoints."""
