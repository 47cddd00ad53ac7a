"""The process allocator on CPU: glibc's malloc settings `wb train` starts with, the bounds of oneDNN's kernel caches,
its mmap threshold (freed activations go back to the system) and heap trimming between phases."""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameter and the size from which allocations get a memory mapping of their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


# glibc malloc without its per-thread cache and fastbins (see `restart_with_malloc_settings`), and with one arena on
# a CPU without native bf16 units, two on one with them (`glibc_tunables`).
NO_CACHES = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"
ONE_ARENA = "glibc.malloc.arena_max=1"
TWO_ARENAS = "glibc.malloc.arena_max=2"


def glibc_tunables() -> str:
    """The `GLIBC_TUNABLES` `wb train` runs with on this machine: always without glibc's per-thread cache and
    fastbins; with one malloc arena on a CPU without native bf16 units (no `amx_tile` or `avx512_bf16` flag in
    /proc/cpuinfo, or `WB_CPU_BF16=0`), where `precision: auto` trains in fp32, and two on one with them.

    One arena makes the two threads of a split step (`row_parallel`) take their tensors from the same heap: on a
    2-core AVX2 EPYC in fp32, peak RSS 3,062 -> 2,691 MB over 8 steps, steps as fast. On a 2-core AMX Xeon under bf16
    autocast, whose casts allocate far more often from both threads at once, one arena made steps 35 % slower (2.6
    -> 3.9 s); two cost no time and kept the heap from creeping over a run (SmolLM2-135M LoRA, 26 steps of 2 x 512
    tokens: peak RSS 3,484 MB with a per-thread arena each, 3,198 MB with two arenas; the fp32 steps there: one
    arena 4 % slower, the same RSS)."""
    from workbench.precision import forced_cpu_bf16

    native = forced_cpu_bf16()
    if native is None:
        flags = cpu_flags()
        native = "amx_tile" in flags or "avx512_bf16" in flags
    return f"{NO_CACHES}:{TWO_ARENAS if native else ONE_ARENA}"


def cpu_flags() -> list[str]:
    """The CPU's flags as /proc/cpuinfo lists them (none where it cannot be read), read without importing torch:
    `glibc_tunables` runs before the process restarts."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


# How many kernels oneDNN's primitive cache and ideep's (torch's oneDNN layer) computation cache keep
# (`bound_kernel_caches`).
KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}


def bound_kernel_caches() -> None:
    """Set `KERNEL_CACHES` in the environment, where the user has not set them: call it before torch's first oneDNN
    product (both read their capacity then).

    A bf16 matrix product on a CPU runs through oneDNN, which builds a kernel for each shape and keeps it, with its
    buffers, in two caches of 1,024 entries by default. Packed batches differ in length from step to step, so
    every step brings new shapes: on SmolLM2-135M about 20 MB more were kept with each new batch length, and
    `wb train`'s RSS crept up over a run (LoRA, 2 x 512 packed tokens, 2 threads of an AMX Xeon, 26 steps: 1.6 ->
    2.2 GB) although the tensors alive stayed the same. One step needs a few dozen kernels (the projections, the
    adapters and the head, forward and backward, per thread); 128 keeps them all: peak RSS 2,198 -> 1,945 MB,
    steps as fast (1.85 vs 1.80 s; 16 entries made them 55 % slower)."""
    for name, value in KERNEL_CACHES.items():
        os.environ.setdefault(name, value)


def train_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` with what `wb train` sets for itself where `env` does not: oneDNN's kernel-cache bounds (`KERNEL_CACHES`)
    and, on Linux, the glibc malloc settings it restarts with (`glibc_tunables`). For a process that runs the trainer
    with `wb train`'s settings from its start (the benchmarks' children)."""
    result = {**KERNEL_CACHES, **env}
    if sys.platform.startswith("linux"):
        result.setdefault("GLIBC_TUNABLES", glibc_tunables())
    return result


def restart_with_malloc_settings() -> None:
    """Re-execute this process (same PID, arguments, descriptors) with `GLIBC_TUNABLES` set to `glibc_tunables()`, on
    Linux with glibc, unless the variable is set already (by the user, or by this call before the exec). Call it
    before anything else happens in the process: it does not return when it restarts.

    torch allocates every CPU tensor with `posix_memalign(64, n)`. glibc serves that from a block a little larger
    than n and hands the spare bytes back as a small chunk, which lands in its per-thread cache (or a fastbin) and
    stays allocated as far as the heap is concerned. When the tensor is freed its block is a hole of exactly its
    own size, fenced by that small chunk, so the next tensor of the same size (asking again for a little more) does
    not fit in it: a training step's activations, freed and allocated again at every step in the same sizes, are
    carved from fresh heap while the holes pile up, and the peak RSS lies far above the memory in use. Without the
    cache and fastbins the spare chunk merges with the freed block and the hole is reused. Measured (glibc 2.36,
    SmolLM2-135M LoRA, 2 x 512 packed tokens, fp32, one core): peak RSS 3,988 → 2,906 MB, steps as fast (9.5 vs
    9.6-9.8 CPU-s). One arena for every thread where that pays (`glibc_tunables`): a step split over threads
    (`row_parallel`) would otherwise take each part's activations from an arena of its thread's own, which the
    heap's free blocks of the main one do not serve. The tunables can only be set before the process starts, hence
    the restart.
    """
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return
    if not libc.startswith("glibc") or not sys.orig_argv:
        return
    env = {**os.environ, "GLIBC_TUNABLES": glibc_tunables()}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def return_freed_memory() -> bool:
    """On Linux with glibc, give every allocation of 1 MiB or more a memory mapping of its own (`mallopt`
    M_MMAP_THRESHOLD), which goes back to the system as soon as it is freed. True when set (process-wide, for good).

    glibc's default threshold rises with every large block freed (up to 32 MiB); after that a training step's
    activations (a few MiB each, allocated and freed at every step) are carved from its heap, which fragments, so
    on CPU the peak RSS lies well above the memory in use. With this setting every such block is mapped afresh and
    its pages faulted in at each step. Measured on the embedded model with LoRA, 2 cores: 4 x 512 tokens a step,
    peak RSS 11.3 GB → 7.1 GB, steps 15.3 s → 19.0 s; 2 x 512, 6.2 GB → 4.6 GB, 6.2 s → 7.9 s. Hence off by
    default (recipe key `release_freed_memory`).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_heap() -> bool:
    """Hand the free pages of the process heap back to the system now (glibc `malloc_trim(0)`). True when called.

    Between a run's phases: the training steps leave the heap full of freed activation blocks (RSS stays at the
    steps' peak), on top of which the per-example loss pass and the save would allocate more. One call costs
    milliseconds; unlike `return_freed_memory` it does not slow the steps."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim(0)
    return True
