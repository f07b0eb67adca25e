"""The one error type users see as a one-line message (the CLI exits with status 2)."""


class DistlgError(ValueError):
    """Bad input: a setting, a file or a request that cannot be served as given."""


class WorkerLost(RuntimeError):
    """Another worker of a distributed job died or stopped answering: the job cannot go on."""
