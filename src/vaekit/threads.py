"""How many CPU threads vaekit's numerical work takes: torch's, and that of the libraries numpy, SciPy and
scikit-learn load, which take one thread per core whatever torch was told."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def use_threads(threads: int) -> None:
    """`threads` CPU threads (checked by the callers: --threads, TrainConfig.threads) for torch and for the BLAS and
    OpenMP libraries loaded now (numpy's BLAS, loaded with torch), for the rest of the process, as torch's own limit
    is. scikit-learn's and SciPy's libraries, loaded when first used, take torch's count where vaekit uses them
    (as_torch); the thread variables (OMP_NUM_THREADS, ...) that other processes read are left as they are."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


@contextlib.contextmanager
def as_torch() -> Iterator[None]:
    """Within it, the BLAS and OpenMP libraries loaded (import scikit-learn's modules first) take as many threads as
    torch does: scikit-learn's fits in vaekit (the mixture samplers', the edits' and the metrics' regressions and
    PCA). OpenMP's limit holds in the calling thread, so also in a thread started later (the explorer's); SciPy's
    OpenBLAS takes it from the main thread (called from another, it keeps its count)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads()):
        yield
