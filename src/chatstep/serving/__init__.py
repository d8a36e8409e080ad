"""``chatstep serve``: HTTP services in front of chatstep.

- :mod:`~chatstep.serving.model_app`: the embedded model as an OpenAI-compatible endpoint, and the
  bearer-key rule every served app shares;
- :mod:`~chatstep.serving.worker`: the model worker process behind it, restarted when it dies;
- :mod:`~chatstep.serving.steps`: step files as ``POST /steps/{id}`` (``serve --steps DIR``), with
  :mod:`~chatstep.serving.catalog` (loading the directory), :mod:`~chatstep.serving.openapi`,
  :mod:`~chatstep.serving.problems` (errors to HTTP statuses) and :mod:`~chatstep.serving.wire`
  (request and response bodies).

Nothing is imported here, so loading one service never loads another's dependencies.
"""
