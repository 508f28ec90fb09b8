/*
 * A JVM service whose heap grows and is collected, or a cache that only grows.
 *
 *   javac -d /var/tmp/mgjava bench/workloads/runtime_heap.java
 *   java -Xmx<N>m -XX:+UseG1GC -cp /var/tmp/mgjava RuntimeHeap MODE SECONDS LIVE_MB RATE_MB_S [BATCH_MB PERIOD_S]
 *
 * MODE batch: a service with a steady live set of LIVE_MB (a map of 64 KiB
 *   records, one record replaced every 1/RATE of a second's worth of
 *   allocation: RATE_MB_S of garbage a second) that every PERIOD_S seconds
 *   runs a batch job: loads BATCH_MB of records over about a third of the
 *   period, then drops them and asks for a full collection (System.gc()).
 *   The heap, and the JVM's RSS, rise with each batch and, as G1 shrinks the
 *   heap after a full collection, fall again: a slow sawtooth whose height
 *   is set by -Xmx and BATCH_MB.
 * MODE grow: a cache that keeps everything: RATE_MB_S of 64 KiB records a
 *   second are added and never removed (plus as much garbage).  With -Xmx
 *   above the cgroup's limit the kernel's OOM killer ends the JVM before
 *   the JVM ever runs out of heap.
 *
 * Runs SECONDS, printing heap figures every second.  The class is not public
 * so the file can carry the workload naming of bench/workloads/.
 */
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

class RuntimeHeap {
    static final int REC = 64 * 1024;

    static byte[] record(long n) {
        byte[] b = new byte[REC];
        for (int i = 0; i < REC; i += 4096) b[i] = (byte) (n + i);
        return b;
    }

    public static void main(String[] a) throws Exception {
        String mode = a[0];
        double seconds = Double.parseDouble(a[1]);
        int liveMb = Integer.parseInt(a[2]);
        double rate = Double.parseDouble(a[3]);
        int batchMb = a.length > 4 ? Integer.parseInt(a[4]) : 0;
        double period = a.length > 5 ? Double.parseDouble(a[5]) : 30;
        Runtime rt = Runtime.getRuntime();
        Map<Long, byte[]> live = new HashMap<>();
        List<byte[]> batch = new ArrayList<>();
        long n = 0, sink = 0;
        long t0 = System.nanoTime();
        double lastLog = -1, nextBatch = period / 3;
        boolean inBatch = false;
        int liveRecs = liveMb * 1024 * 1024 / REC;
        while (true) {
            double t = (System.nanoTime() - t0) / 1e9;
            if (t >= seconds) break;
            // pace: RATE_MB_S of records a second
            long due = (long) (t * rate * 1024 * 1024 / REC);
            while (n < due) {
                byte[] r = record(n);
                if (mode.equals("grow")) {
                    live.put(n, r);
                    sink += record(n + 1)[0];        // as much garbage
                } else if (live.size() < liveRecs) {
                    live.put(n, r);
                } else {
                    live.put(n % liveRecs, r);       // replace: the old record is garbage
                }
                n++;
            }
            if (mode.equals("batch")) {
                if (!inBatch && t >= nextBatch) inBatch = true;
                if (inBatch) {
                    int want = (int) Math.min((t - nextBatch) / (period / 3) * batchMb * 1024.0 * 1024 / REC,
                                              batchMb * 1024.0 * 1024 / REC);
                    while (batch.size() < want) batch.add(record(batch.size()));
                    if (t - nextBatch >= period / 3) {
                        for (byte[] r : batch) sink += r[0];
                        batch.clear();
                        System.gc();
                        inBatch = false;
                        nextBatch += period;
                    }
                }
            }
            if (t - lastLog >= 1) {
                lastLog = t;
                System.out.printf("t=%.1fs live=%d batch=%d heap committed=%dMiB used=%dMiB%n", t, live.size(),
                                  batch.size(), rt.totalMemory() >> 20, (rt.totalMemory() - rt.freeMemory()) >> 20);
            }
            Thread.sleep(5);
        }
        System.out.println("done " + sink);
    }
}
