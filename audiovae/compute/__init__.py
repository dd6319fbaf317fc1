"""Where computation runs: devices, torch's CPU threads and the synthesis worker threads."""
