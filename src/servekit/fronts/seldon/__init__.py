"""Seldon Core's front: ``api`` (the microservice REST API and its message
forms) and ``cli`` (``servekit microservice MyModel``, as
``seldon-core-microservice``)."""
