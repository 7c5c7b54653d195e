"""Inference graphs: a model whose answer comes from other served models.

A graph is a model entry in the repository with ``"implementation": "graph"``
and its graph in the ``graph`` field of its ``model-settings.json`` (or a
``graph.yaml`` / ``graph.yml`` in its folder, or the file ``parameters.uri``
names; a whole KServe ``InferenceGraph`` resource is read for its ``spec``).
The graph's form is KServe InferenceGraph's (:mod:`servekit.graphs.spec`)::

    nodes:
      root:                       # calls enter here
        routerType: Sequence      # Sequence | Switch | Ensemble | Splitter (| Router | Combiner)
        steps:
          - serviceName: scaler   # a served model (version / label pin one) or graph
          - serviceName: iris
            data: $response       # the previous answer (default: the node's request)
            map: {scaled: input-0}  # previous output name -> this step's input name
            dependency: Hard      # Hard (default): its failure fails the graph; Soft: skipped
          - nodeName: other       # a node of this graph
            condition: "predict.#(==1)"   # GJSON (servekit.graphs.conditions)

It is served like any model, through every protocol: the runtime
(:class:`~servekit.graphs.runtime.GraphRuntime`, async) calls each step's
model through the worker's data plane (protocol label ``graph``), so each
node call has its own metrics, request id, deadline (what is left of the
graph's) and, with tracing on, its own span under the request's. Its
metadata are its first node's inputs and its last (or merged) outputs
unless ``inputs``/``outputs`` are given. A failing step fails the graph with
the step's error class and status, its message saying ``graph 'g' node 'n'
step 's' (model 'm'): …``.

Bounds (refused when the graph loads): :data:`~servekit.graphs.spec.MAX_NODES`
nodes, :data:`~servekit.graphs.spec.MAX_STEPS` steps a node, names of
:data:`~servekit.graphs.spec.MAX_NAME` characters, conditions of
:data:`~servekit.graphs.conditions.MAX_CONDITION`; a node reaching itself or
a graph calling itself is refused at load; graphs calling each other in a
cycle (``a`` calls ``b`` calls ``a``) are refused whenever that cycle is
loaded (:mod:`servekit.graphs.service`, with the path); calls nest at most
:data:`~servekit.graphs.spec.MAX_DEPTH` nodes deep.

**Adding a node kind** (Seldon's Router and Combiner do): write a
:class:`~servekit.graphs.kinds.NodeKind` (``check`` at load, ``async run(run,
node, request)``, ``inputs``/``outputs`` for metadata), reach models only
through the :class:`~servekit.graphs.kinds.GraphRun` it gets (``run.step``,
``run.model`` for the node's own ``serviceName``, ``run.feed``, ``run.merge``,
``run.view``), and list it in :data:`servekit.graphs.kinds.NODE_KINDS` as
``"routerType": "module:attribute"``. A node's own keys for its kind go in
its ``parameters`` (and a step's in the step's ``parameters``).

TorchServe's workflow archives (``.war``) are served as graphs too:
:mod:`servekit.fronts.torchserve.workflows`.
"""
