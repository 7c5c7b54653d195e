"""The fronts of the servers servekit stands in for. Each package holds one
foreign server's routes, codecs, settings translation and command-line entry,
and reaches models only through the data plane like every other skin:

- :mod:`servekit.fronts.torchserve`: inference and management APIs, the
  management changes, ``--model-store``/``--ts-config``/``config.properties``,
  ``servekit --start``/``--stop``.
- :mod:`servekit.fronts.tfserving`: the REST and gRPC APIs, their codecs,
  ``--model_config_file``/``--model_base_path``/``--rest_api_port``/``--port``,
  ``MODEL_NAME``/``MODEL_BASE_PATH``.
- :mod:`servekit.fronts.seldon`: the microservice API and ``servekit microservice``.
"""
