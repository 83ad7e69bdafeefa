"""rlexp's submitit launchers for Hydra (found by Hydra's plugin scan of the `hydra_plugins` namespace)."""
