"""What happens when something breaks, in one place: damaged checkpoints and refused writes
(checkpoint_faults), SIGTERM and preemption (preemption), one run per workdir (workdir_lock),
the processes meeting before JAX starts (cluster), and the libraries' log kept off the console
(logs). docs/faults.md is the table of each case."""
