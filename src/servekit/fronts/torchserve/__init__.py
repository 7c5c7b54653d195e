"""TorchServe's front: ``api`` (inference and management routes, error names),
``changes`` (management changes applied in every worker), ``mode`` (its flags,
``config.properties``, the management token, ``--start``/``--stop``)."""
