"""Deploying: the deployment file, the registration spec, the plan, its steps, replicas and `up`."""
