"""A model's own Python environment (``parameters.environment`` in its settings).

- :mod:`servekit.envs.spec` reads what the model asks for (``requirements.txt``,
  MLflow's ``python_env.yaml``, the pip section of ``conda.yaml``) and refuses
  anything that would make the server fetch from somewhere pip is not
  configured for (index options, URLs, paths, editable installs).
- :mod:`servekit.envs.build` builds one virtual environment per distinct set of
  requirements (a content hash), with ``uv`` when it is on ``PATH``, else pip,
  and makes servekit's own code importable in it behind the model's packages.
- :mod:`servekit.envs.wire` is the framing between the server and the model's
  process: a JSON header plus the tensors' raw bytes, no pickle.
- :mod:`servekit.envs.child` runs in the environment's Python and loads the
  model with the runtime chosen for it; :class:`servekit.runtimes.isolated.IsolatedRuntime`
  is its face in the server.
"""
