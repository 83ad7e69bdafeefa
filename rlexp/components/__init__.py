"""Swappable pieces selected by config `_target_` entries: envs, encoders, buffers, callbacks."""
