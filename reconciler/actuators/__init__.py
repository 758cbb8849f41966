"""Side effects, one kind each: `awx` launches job templates and waits for the jobs."""
