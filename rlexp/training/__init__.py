"""Training plumbing: one run top to bottom (train), its callbacks, checkpoint units, where a run starts
(resume), TensorBoard history (tblog) and fault injection for the tests (faults)."""
