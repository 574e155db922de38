"""Child-vs-parent metrics, rollouts, latency and the statistics of the answer."""
