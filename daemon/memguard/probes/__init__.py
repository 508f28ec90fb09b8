"""Event probes: the kernel tells us when something happens (kmsg, tracefs, eBPF)."""
