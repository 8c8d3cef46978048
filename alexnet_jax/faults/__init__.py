"""When a run is stopped or crowded out: `preemption`, `workdir_lock`, `logs` (docs/faults.md)."""
