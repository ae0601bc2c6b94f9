"""Server-side services of the dashboard: one reading layer for every kind of run, no dash.

* :mod:`services.catalog` -- :class:`~services.catalog.RunCatalog`: discovery under the base dir, one
  reader per run, file events;
* :mod:`services.readers` -- the readers (Trainboard, experiment, Hugging Face, TensorBoard);
* :mod:`services.model` -- the run model every page reads (:class:`~services.model.Run`, series,
  status checking, the live/stale rule);
* :mod:`services.detection` -- the collector's rule engine over runs without the collector;
* :mod:`services.watch` -- non-recursive inotify watches;
* :mod:`services.alerts`, :mod:`services.samples`, :mod:`services.spectral_store` -- per-page views;
* :mod:`services.downsample`, :mod:`services.context`, :mod:`services.security`.

Callbacks turn what these services return into components.
"""
