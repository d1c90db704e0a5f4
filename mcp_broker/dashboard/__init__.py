"""A local web dashboard and Prometheus metrics over the broker, read through the small ``Source`` interface."""
