"""Model bundles on disk and the registries that keep them.

* :mod:`ml_core.registry.bundles`: a bundle directory (save / load a model, its manifest) and
  the local store (:class:`~ml_core.registry.bundles.BundleStore`);
* :mod:`ml_core.registry.interface`: :class:`~ml_core.registry.interface.BundleRegistry`, what
  the stages and serving call, and :func:`~ml_core.registry.interface.open_bundle_registry`;
* :mod:`ml_core.registry.mlflow`: the shared backend on an MLflow server;
* :mod:`ml_core.registry.signing`: the signature of a bundle's records.

Not to be confused with :mod:`ml_core.models.registry` (the registry of model classes by name).
"""
