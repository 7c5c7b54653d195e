"""TensorFlow Serving's front: ``rest`` and ``grpc_api`` (its two APIs),
``codec``/``grpc_codec`` (their wire formats), ``operations`` (what both
answer), ``source`` and ``model_config`` (its flags and config file as a
source of models)."""
