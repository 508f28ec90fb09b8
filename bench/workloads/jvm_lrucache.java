/**
 * An in-process LRU cache in a JVM service: the live set is bounded, the heap is not.
 *
 * Class JvmLruCache (compile with javac -d /var/tmp/mgjava4 bench/workloads/jvm_lrucache.java).
 * Args: capacityMiB fillMiBps valueKiB seconds garbageMiBps.
 * Paced on System.nanoTime in 50 ms ticks: each tick inserts fillMiBps/20 MiB
 * of new byte[valueKiB] values under fresh keys into an access-ordered
 * LinkedHashMap that evicts its eldest entries once the values pass
 * capacityMiB (so the live set climbs to the capacity and stays there),
 * looks up random keys (hits re-order the map), and makes garbageMiBps/20 MiB
 * of short-lived request buffers.  Run for `seconds`.  With G1, the heap the
 * process holds is set by -Xmx (and G1's heap sizing), not by the cache:
 * with -Xmx below the cgroup limit the curve climbs to a sawtooth plateau; with
 * -Xmx above it, G1 keeps expanding into the limit although the live set fits.
 */
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

class JvmLruCache {
    static long bytes = 0;

    public static void main(String[] a) throws Exception {
        final long cap = Long.parseLong(a[0]) << 20;
        double fill = Double.parseDouble(a[1]);
        int valueKiB = Integer.parseInt(a[2]);
        double seconds = Double.parseDouble(a[3]);
        double garbage = Double.parseDouble(a[4]);
        SplittableRandom rng = new SplittableRandom(11);
        LinkedHashMap<Long, byte[]> cache = new LinkedHashMap<Long, byte[]>(1 << 16, 0.75f, true) {
            protected boolean removeEldestEntry(Map.Entry<Long, byte[]> e) {
                if (bytes > cap) { bytes -= e.getValue().length; return true; }
                return false;
            }
        };
        int vsize = valueKiB << 10;
        long perTickNew = (long) (fill * (1 << 20) / 20 / vsize);
        long perTickGarbage = (long) (garbage * (1 << 20) / 20 / 65536);
        long next = 0, hits = 0, lookups = 0, sink = 0;
        long t0 = System.nanoTime();
        long tick = 0;
        while ((System.nanoTime() - t0) / 1e9 < seconds) {
            long due = t0 + tick * 50_000_000L;
            long now = System.nanoTime();
            if (due > now) Thread.sleep((due - now) / 1_000_000, (int) ((due - now) % 1_000_000));
            tick++;
            for (long i = 0; i < perTickNew; i++) {
                byte[] v = new byte[vsize];
                for (int j = 0; j < vsize; j += 4096) v[j] = (byte) i;
                bytes += vsize;
                cache.put(next++, v);
            }
            for (int i = 0; i < 500; i++) {
                long k = next - 1 - (long) (Math.abs(rng.nextGaussian()) * cache.size() / 2);
                lookups++;
                byte[] v = cache.get(k);
                if (v != null) { hits++; sink += v[0]; }
            }
            for (long i = 0; i < perTickGarbage; i++) {
                byte[] g = new byte[65536];
                g[rng.nextInt(65536)] = 1;
                sink += g[0];
            }
            if (tick % 100 == 0) {
                Runtime r = Runtime.getRuntime();
                System.out.printf("%.1fs cache %d MiB (%d entries) hit %.2f heap %d/%d MiB%n",
                        (System.nanoTime() - t0) / 1e9, bytes >> 20, cache.size(),
                        hits / (double) Math.max(1, lookups),
                        (r.totalMemory() - r.freeMemory()) >> 20, r.totalMemory() >> 20);
            }
        }
        System.out.println("done " + sink);
    }
}
