/*
 * A JVM batch job: build a large directed graph from a stream of edges, pack it, then rank it.
 *
 *   javac -d /var/tmp/mgjava bench/workloads/java_graph.java
 *   java -Xmx<N>m -XX:+UseG1GC -cp /var/tmp/mgjava JavaGraph NODES AVG_DEGREE EDGES_PER_S RANK_SECONDS [SEED]
 *
 * Phase 1, ingest: NODES * AVG_DEGREE edges arrive at about EDGES_PER_S a
 *   second (paced; slower if the CPU cannot keep up).  Sources are uniform,
 *   targets skewed toward low ids (u^2: a few very popular nodes).  Each
 *   node's out-edges go into its own growable int list (an int[] grown by
 *   half when full, so the old arrays become garbage): the live heap climbs
 *   steadily and G1 expands the committed heap, and with it the JVM's RSS,
 *   in steps.
 * Phase 2, pack: the lists are copied into one compressed-sparse-row pair
 *   of arrays (offsets, targets) while the lists are still alive (the peak:
 *   both forms at once), then the lists are dropped.
 * Phase 3, rank: PageRank iterations over the packed graph for RANK_SECONDS;
 *   each iteration allocates a fresh double[NODES] of ranks and a small
 *   top-100 report (young-generation garbage): the heap in use saws, G1
 *   commits and uncommits heap with it, and the RSS saws too, around the
 *   pack's peak (~570-730 MiB at 2M nodes, -Xmx700m), with no trend.
 *
 * With -Xmx small enough for the heap to stay under the cgroup's limit the
 * job fits: steps up, a peak at the pack, then a long sawtooth plateau.  With -Xmx
 * above the limit and a larger graph the kernel's OOM killer ends the JVM
 * during the ingest or the pack.
 *
 * Seeded (java.util.SplittableRandom, SEED default 7); prints phase, edges
 * and heap figures every second.  The class is not public so the file can
 * carry the workload naming of bench/workloads/.
 */
import java.util.SplittableRandom;

class JavaGraph {
    static final long T0 = System.nanoTime();

    static double now() {
        return (System.nanoTime() - T0) / 1e9;
    }

    static double lastLog = -1;

    static void log(String phase, long edges, String extra) {
        double t = now();
        if (t - lastLog < 1.0) return;
        lastLog = t;
        Runtime rt = Runtime.getRuntime();
        long used = (rt.totalMemory() - rt.freeMemory()) >> 20;
        System.out.printf("t=%.1fs phase=%s edges=%d heapUsed=%dMiB committed=%dMiB %s%n",
                t, phase, edges, used, rt.totalMemory() >> 20, extra);
        System.out.flush();
    }

    public static void main(String[] args) throws InterruptedException {
        int nodes = Integer.parseInt(args[0]);
        int degree = Integer.parseInt(args[1]);
        double rate = Double.parseDouble(args[2]);
        double rankSeconds = Double.parseDouble(args[3]);
        long seed = args.length > 4 ? Long.parseLong(args[4]) : 7;
        SplittableRandom rnd = new SplittableRandom(seed);

        // phase 1: ingest
        int[][] lists = new int[nodes][];
        int[] sizes = new int[nodes];
        long total = (long) nodes * degree;
        double start = now();
        long edges = 0;
        while (edges < total) {
            long due = Math.min(total, (long) ((now() - start) * rate) + 1000);
            for (; edges < due; edges++) {
                int src = rnd.nextInt(nodes);
                double u = rnd.nextDouble();
                int dst = (int) (u * u * nodes);
                int[] l = lists[src];
                int n = sizes[src];
                if (l == null) {
                    l = new int[4];
                    lists[src] = l;
                } else if (n == l.length) {
                    int[] bigger = new int[n + (n >> 1) + 1];
                    System.arraycopy(l, 0, bigger, 0, n);
                    l = bigger;
                    lists[src] = l;
                }
                l[n] = dst;
                sizes[src] = n + 1;
            }
            log("ingest", edges, "");
            if ((long) ((now() - start) * rate) < edges) Thread.sleep(5);
        }
        // phase 2: pack
        int[] offsets = new int[nodes + 1];
        for (int i = 0; i < nodes; i++) offsets[i + 1] = offsets[i] + sizes[i];
        int[] targets = new int[offsets[nodes]];
        for (int i = 0; i < nodes; i++) {
            if (lists[i] != null) System.arraycopy(lists[i], 0, targets, offsets[i], sizes[i]);
            if ((i & 0xFFFF) == 0) log("pack", edges, "");
        }
        lastLog = -1;
        log("packed", edges, "");
        lists = null;
        sizes = null;
        // phase 3: rank
        double[] rank = new double[nodes];
        java.util.Arrays.fill(rank, 1.0 / nodes);
        int iters = 0;
        double rankStart = now();
        while (now() - rankStart < rankSeconds) {
            double[] next = new double[nodes];
            double base = 0.15 / nodes;
            for (int i = 0; i < nodes; i++) {
                int a = offsets[i], b = offsets[i + 1];
                if (a == b) continue;
                double share = 0.85 * rank[i] / (b - a);
                for (int k = a; k < b; k++) next[targets[k]] += share;
            }
            for (int i = 0; i < nodes; i++) next[i] += base;
            rank = next;
            // a top-100 report, as objects: young garbage
            java.util.PriorityQueue<double[]> top = new java.util.PriorityQueue<>(
                    (x, y) -> Double.compare(x[0], y[0]));
            for (int i = 0; i < nodes; i += 7) {
                top.add(new double[] {rank[i], i});
                if (top.size() > 100) top.poll();
            }
            iters++;
            log("rank", edges, "iters=" + iters);
        }
        lastLog = -1;
        log("done", edges, "iters=" + iters);
    }
}
