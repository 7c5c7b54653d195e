"""MLflow's scoring protocol (``mlflow models serve``): ``/invocations``, ``/health``, ``/version``."""
