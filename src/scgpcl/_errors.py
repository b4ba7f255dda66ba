"""Exceptions raised for problems a user can fix."""


class InputError(ValueError):
    """Bad user input: the message names the problem and the fix.

    The CLI turns it into a one-line error and a non-zero exit code.
    """


class NoTestableClusters(InputError):
    """The clustering has fewer than two clusters, or none with two or more cells: no marker test is possible.

    A property of the clustering, not of an argument: the report says so and goes on without markers.
    """


class OutputFailed(RuntimeError):
    """An output could not be written after the work (a problem the checks before it could not see).

    The message names the output, the reason and what was written and kept.
    """


#: what torch's allocators say when an allocation fails (CPU, CUDA)
ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory")


def is_allocation_failure(e: BaseException) -> bool:
    """Whether ``e`` itself (not its causes) is a failed allocation.

    Python's ``MemoryError``, torch's ``OutOfMemoryError`` (CUDA), or a ``RuntimeError`` from torch's CPU or
    CUDA allocator.
    """
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and any(t in str(e) for t in ALLOCATOR_FAILURES)
