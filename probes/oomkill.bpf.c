// SPDX-License-Identifier: Apache-2.0
/*
 * oomkill.bpf.c: memguard's kernel-side probe, compiled by BCC at start in
 * the child process daemon/memguard/probes/bpf_child.py.
 *
 * Tracepoints only: they are the kernel's stable interface, and hosts
 * without kprobes (CONFIG_KPROBES unset) have them. The program never reads
 * a kernel struct: BCC may compile against headers older than the running
 * kernel (Debian's 6.1 headers for a 6.18 kernel), whose offsets would be
 * wrong; tracepoint arguments come from the live format files and are right.
 *
 *   oom:mark_victim                 one struct mg_oom_victim per victim,
 *                                   through the ring buffer "victims"
 *   vmscan:mm_vmscan_memcg_reclaim_begin/end, _direct_reclaim_begin/end
 *                                   stall time per task, summed per cgroup2
 *                                   id ("stall_by_cgroup") and per tgid
 *                                   ("stall_by_tgid"); the first event after
 *                                   the child armed "quiet" wakes it through
 *                                   the ring buffer "wakes"
 *
 * The child builds it from the live format files with these defines:
 *   MG_VICTIM_HAS_<FIELD>   oom:mark_victim has that field (TOTAL_VM,
 *                           ANON_RSS, FILE_RSS, SHMEM_RSS, PGTABLES, UID,
 *                           OOM_SCORE_ADJ): Linux 6.9 and later
 *   MG_VICTIM_COMM_DATA_LOC the comm field is a __data_loc string
 *   MG_VICTIM_COMM_ARRAY    the comm field is a char array
 *   MG_HAVE_MEMCG_RECLAIM   the vmscan memcg reclaim tracepoints exist
 *   MG_HAVE_DIRECT_RECLAIM  the vmscan direct reclaim tracepoints exist
 */
#include <uapi/linux/ptrace.h>
#include "oomkill.h"

/* 16 pages, 64 KiB: ~500 records of 128 bytes; a burst of kills is tens. */
BPF_RINGBUF_OUTPUT(victims, 16);

/* Tasks in reclaim now: key (pid << 1 | kind) -> bpf_ktime_get_ns() at begin. */
#define MG_KIND_MEMCG 0
#define MG_KIND_DIRECT 1
BPF_HASH(reclaim_start, u64, u64, 16384);

BPF_HASH(stall_by_cgroup, u64, struct mg_stall, 4096);
BPF_HASH(stall_by_tgid, u32, struct mg_stall, 8192);
BPF_ARRAY(counters, struct mg_counters, 1);

/*
 * The child sets quiet[0] before each look at the maps; the next reclaim
 * event clears it and sends one byte through "wakes". So an idle host's child sleeps in poll() until reclaim starts,
 * instead of looking at the maps on a timer. Two CPUs may both see it set:
 * two wakes, harmless.
 */
BPF_ARRAY(quiet, u32, 1);
BPF_RINGBUF_OUTPUT(wakes, 1);

static __always_inline void wake_child(void)
{
	int zero = 0;
	u32 *q = quiet.lookup(&zero);
	u8 *w;

	if (!q || !*q)
		return;
	*q = 0;
	w = wakes.ringbuf_reserve(sizeof(*w));
	if (w) {
		*w = 1;
		wakes.ringbuf_submit(w, 0);
	}
}

static __always_inline struct mg_counters *counters_get(void)
{
	int zero = 0;
	return counters.lookup(&zero);
}

#define MG_COUNT(field)                                          \
	do {                                                     \
		struct mg_counters *c__ = counters_get();        \
		if (c__)                                         \
			__sync_fetch_and_add(&c__->field, 1);    \
	} while (0)

TRACEPOINT_PROBE(oom, mark_victim)
{
	struct mg_oom_victim *e;
	u64 id = bpf_get_current_pid_tgid();

	MG_COUNT(victims);
	e = victims.ringbuf_reserve(sizeof(*e));
	if (!e) {
		MG_COUNT(victims_lost);
		return 0;
	}
	/* Ring buffer memory is not zeroed: set every field. */
	__builtin_memset(e, 0, sizeof(*e));
	e->ktime_ns = bpf_ktime_get_ns();
	e->pid = args->pid;
	e->killer_pid = (u32)id;
	e->killer_tgid = id >> 32;
	e->killer_cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->killer_comm, sizeof(e->killer_comm));
#if defined(MG_VICTIM_COMM_DATA_LOC)
	TP_DATA_LOC_READ_STR(e->comm, comm, sizeof(e->comm));
#elif defined(MG_VICTIM_COMM_ARRAY)
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), args->comm);
#endif
#ifdef MG_VICTIM_HAS_TOTAL_VM
	e->total_vm_kb = args->total_vm;
#endif
#ifdef MG_VICTIM_HAS_ANON_RSS
	e->anon_rss_kb = args->anon_rss;
#endif
#ifdef MG_VICTIM_HAS_FILE_RSS
	e->file_rss_kb = args->file_rss;
#endif
#ifdef MG_VICTIM_HAS_SHMEM_RSS
	e->shmem_rss_kb = args->shmem_rss;
#endif
#ifdef MG_VICTIM_HAS_PGTABLES
	e->pgtables_kb = args->pgtables;
#endif
#ifdef MG_VICTIM_HAS_UID
	e->uid = args->uid;
#endif
#ifdef MG_VICTIM_HAS_OOM_SCORE_ADJ
	e->oom_score_adj = args->oom_score_adj;
#endif
	victims.ringbuf_submit(e, 0);
	return 0;
}

static __always_inline void reclaim_begin(u32 kind)
{
	u64 key = ((u64)(u32)bpf_get_current_pid_tgid() << 1) | kind;
	u64 now = bpf_ktime_get_ns();

	if (reclaim_start.update(&key, &now) != 0)
		MG_COUNT(begin_dropped);
	wake_child();
}

static __always_inline void stall_add(struct mg_stall *s, u32 kind, u64 ns)
{
	if (kind == MG_KIND_MEMCG) {
		__sync_fetch_and_add(&s->memcg_count, 1);
		__sync_fetch_and_add(&s->memcg_ns, ns);
	} else {
		__sync_fetch_and_add(&s->direct_count, 1);
		__sync_fetch_and_add(&s->direct_ns, ns);
	}
	if (ns > s->max_ns)
		s->max_ns = ns;
}

static __always_inline void reclaim_end(u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	u64 key = ((u64)(u32)id << 1) | kind;
	u32 tgid = id >> 32;
	u64 cgroup_id, ns, *start;
	struct mg_stall zero = {}, *s;

	wake_child();
	start = reclaim_start.lookup(&key);
	if (!start) {
		MG_COUNT(end_unmatched);
		return;
	}
	ns = bpf_ktime_get_ns() - *start;
	reclaim_start.delete(&key);

	cgroup_id = bpf_get_current_cgroup_id();
	s = stall_by_cgroup.lookup_or_try_init(&cgroup_id, &zero);
	if (s)
		stall_add(s, kind, ns);
	else
		MG_COUNT(stall_dropped);
	s = stall_by_tgid.lookup_or_try_init(&tgid, &zero);
	if (s)
		stall_add(s, kind, ns);
	else
		MG_COUNT(stall_dropped);
}

#ifdef MG_HAVE_MEMCG_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin)
{
	MG_COUNT(memcg_begin);
	reclaim_begin(MG_KIND_MEMCG);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end)
{
	MG_COUNT(memcg_end);
	reclaim_end(MG_KIND_MEMCG);
	return 0;
}
#endif

#ifdef MG_HAVE_DIRECT_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin)
{
	MG_COUNT(direct_begin);
	reclaim_begin(MG_KIND_DIRECT);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end)
{
	MG_COUNT(direct_end);
	reclaim_end(MG_KIND_DIRECT);
	return 0;
}
#endif
