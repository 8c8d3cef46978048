"""What happens when a run is stopped or crowded out: SIGTERM and preemption (preemption), one
run per workdir (workdir_lock), and the libraries' log kept off the console (logs). Damaged
checkpoints and refused writes are checkpoints/faults.py; docs/faults.md is the table of each
case."""
