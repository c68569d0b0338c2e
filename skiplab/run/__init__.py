"""Running: everything that trains a run, and nothing that defines a model.

* :mod:`~skiplab.run.config`: what a run is (``TrainConfig``, ``RunSpec``, ``RunResult``);
* :mod:`~skiplab.run.step`: the training step's parts, the same for both engines;
* :mod:`~skiplab.run.loop`: the one training loop (the loop engine: ``Alone``, ``train_run``);
* :mod:`~skiplab.run.batched`: the batched engine (a configuration's seeds stacked, the step
  under vmap), with its fast paths in :mod:`~skiplab.run.seed_batched`;
* :mod:`~skiplab.run.optim`: optimisers by name, over the parameters as one flat tensor;
* :mod:`~skiplab.run.scheduler`: resume, claims, retries and storing, over
  :mod:`~skiplab.run.executors` (this process, local worker processes, Ray);
* :mod:`~skiplab.run.runner`: training runs as the scheduler's work, and ``run_all``.

Strategies and families never import this package (``tests/test_architecture.py``): a
strategy's autograd Function that may run batched over seeds says so through the neutral
:mod:`skiplab.batching`, and the batched engine does the rest.
"""
