"""Training and retraining of text-promptable VoxTell models (see README.md here).

Public API: ``TrainConfig``, ``train``, ``retrain``, ``evaluate``, ``load_training_data``
and the typed data errors. Submodules import torch; import them where needed.
"""
