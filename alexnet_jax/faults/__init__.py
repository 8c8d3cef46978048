"""When a run is stopped, crowded out or refused a write: `preemption`, `workdir_lock`, `logs`,
`write_errors` (docs/faults.md)."""
