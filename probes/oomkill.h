/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oomkill.h: what memguard's BPF program (oomkill.bpf.c) shares with user
 * space (daemon/memguard/probes/bpf_child.py). One header, as libbpf-tools'
 * oomkill.h: the child never restates these layouts, it reads them from the
 * types BCC derives from this file (RingBuf.event(), a table's Leaf).
 *
 * Field types are the kernel's u64/u32/s32/char[N], which BCC's
 * RingBuf.event() turns into ctypes (it rejects __u64). Fields are ordered
 * largest first, so the layout has no hidden padding.
 */
#ifndef MEMGUARD_OOMKILL_H
#define MEMGUARD_OOMKILL_H

#define MG_COMM_LEN 16 /* TASK_COMM_LEN */

/*
 * One oom:mark_victim event, sent through the ring buffer.
 *
 * The victim fields past pid exist only when the kernel's tracepoint has
 * them (Linux 6.9 and later; 4.13 up to 6.8 carry only pid): the child knows
 * which from the format file it built the program from, and reports the
 * others as absent. They are kB, as the tracepoint gives them.
 *
 * "killer" is the task running when the tracepoint fired: the one whose
 * allocation invoked the OOM killer (often the victim itself in a memcg OOM).
 */
struct mg_oom_victim {
	u64 ktime_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u64 total_vm_kb;
	u64 anon_rss_kb;
	u64 file_rss_kb;
	u64 shmem_rss_kb;
	u64 pgtables_kb;
	u64 killer_cgroup_id;  /* bpf_get_current_cgroup_id(): the cgroup2 id */
	u32 pid;               /* the victim's pid, as the tracepoint gives it */
	u32 uid;
	u32 killer_pid;        /* thread id */
	u32 killer_tgid;       /* process id */
	s32 oom_score_adj;     /* a short in the tracepoint */
	u32 reserved;          /* keeps the comms 8-byte aligned; zero */
	char comm[MG_COMM_LEN];  /* empty when the tracepoint has no comm */
	char killer_comm[MG_COMM_LEN];
};

/* Reclaim stall totals, per cgroup2 id and per tgid (cumulative). */
struct mg_stall {
	u64 memcg_count;       /* vmscan:mm_vmscan_memcg_reclaim_begin/end pairs */
	u64 memcg_ns;
	u64 direct_count;      /* vmscan:mm_vmscan_direct_reclaim_begin/end pairs */
	u64 direct_ns;
	u64 max_ns;            /* the longest single stall (updated racily) */
};

/* Event counters: one entry of a BPF array, read by field name. */
struct mg_counters {
	u64 victims;           /* oom:mark_victim hits */
	u64 victims_lost;      /* ring buffer full: the record was not sent */
	u64 memcg_begin;
	u64 memcg_end;
	u64 direct_begin;
	u64 direct_end;
	u64 end_unmatched;     /* an end without its begin (attached mid-stall) */
	u64 begin_dropped;     /* the begin map was full */
	u64 stall_dropped;     /* a totals map was full: a stall went uncounted */
};

#endif /* MEMGUARD_OOMKILL_H */
