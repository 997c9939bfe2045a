"""Background work: the worker loop (`app.jobs.worker`) and one module per kind of job.

Jobs call services and repositories as a router does, never the API layer."""
