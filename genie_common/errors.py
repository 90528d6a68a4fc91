"""The exception types of the whole project, so every floor raises them and the CLI catches each once."""


class ConfigError(ValueError):
    """A user-supplied option is invalid; the message says which and what to do."""


class DatasetError(Exception):
    """A dataset is missing, damaged or inconsistent. The message names the file and what to do."""


class StorageError(RuntimeError):
    """A path or URI cannot be read or written; the message names it and says what to check."""


def cpu_only_torch_error(failure: BaseException, who: str, remedy: str) -> ConfigError | None:
    """A GPU worker group that failed because its nodes' torch is a CPU-only build, as what to do; None for any
    other failure.

    Why it needs saying: Ray Train (and RLlib's learner group, built on it) sets up NCCL for workers that ask for
    GPUs before any of our code runs there, and on a node whose setup installed the CPU wheel that fails with
    torch's "Distributed package doesn't have NCCL built in" deep in a traceback. `who` names the workers and
    their GPUs ("the training workers asked for 1 GPU(s) each"), `remedy` the way to run without GPUs."""
    texts = [str(failure)] + [str(error) for error in getattr(failure, "worker_failures", {}).values()]
    cause = failure.__cause__
    while cause is not None:  # RLlib re-raises Ray Train's error from its own
        texts.append(str(cause))
        cause = cause.__cause__
    if not any("NCCL built in" in text for text in texts):
        return None
    return ConfigError(f"{who}, but the torch on their nodes is a CPU-only build (\"Distributed package doesn't have "
                       f"NCCL built in\"): install torch's CUDA build on the GPU nodes (cluster.yaml's "
                       f"setup_commands), or {remedy}")
