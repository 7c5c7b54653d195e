"""KServe's V1 data plane (``/v1/models/{name}:predict``) on the main HTTP port."""
